"""Prometheus metrics of the daemon core, in a registry of their own.

Per controller: sync durations (histogram), failed syncs, the time of the last
successful sync; per kind: informer events by type.
"""
from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from proxyd.health import HTTPEndpoint

SYNC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall = wall_clock
        self.informer_events = Counter(
            "kube_router_informer_events", "API watch/list events received, by kind and type.",
            ["kind", "type"], registry=self.registry)
        self.sync_duration = Histogram(
            "kube_router_controller_sync_duration_seconds", "Duration of a controller's sync.",
            ["controller"], buckets=SYNC_BUCKETS, registry=self.registry)
        self.sync_errors = Counter(
            "kube_router_controller_sync_errors", "Failed syncs, by controller.",
            ["controller"], registry=self.registry)
        self.last_sync = Gauge(
            "kube_router_controller_last_sync_timestamp_seconds",
            "Unix time of the controller's last successful sync.", ["controller"],
            registry=self.registry)

    def count_event(self, kind: str, type_: str) -> None:
        self.informer_events.labels(kind, type_).inc()

    def observe_sync(self, controller: str, seconds: float, error: BaseException | None) -> None:
        self.sync_duration.labels(controller).observe(seconds)
        if error is None:
            self.last_sync.labels(controller).set(self._wall())
        else:
            self.sync_errors.labels(controller).inc()

    def add_controller(self, controller: str) -> None:
        """Create the controller's series at zero so they exist before its first sync."""
        self.sync_errors.labels(controller)
        self.sync_duration.labels(controller)
        self.last_sync.labels(controller)

    def respond(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)


def metrics_endpoint(metrics: Metrics, addr: str, port: int, path: str) -> HTTPEndpoint:
    return HTTPEndpoint(addr, port, {path: metrics.respond})
