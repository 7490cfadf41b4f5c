"""The daemon's wiring: informers -> trackers -> runners -> controllers' sync, plus
health, metrics and a graceful stop.

A controller is any object with ``name``, ``kinds`` (keys of ``k8s.client.KINDS``
it reads), ``sync_period`` and ``min_sync_interval`` (seconds) and
``sync(ctx: SyncContext)``; optionally ``relevant(kind, old, new)`` (False: a change
it does not read, which wakes nothing), ``bind_runner(request)`` (to ask for a sync
on events of its own), ``stop()`` (to end child processes) and ``preflight()`` (why
the kernel cannot run it, or None). ``ctx.changes`` are the objects that moved since
its last successful sync; with ``ctx.full`` (the first sync, the periodic resync,
the retry after a failure) it rebuilds from the stores and reads the kernel, otherwise
it may apply only what the changes touch. Nothing syncs before every informer it
reads has synced.

Stopping leaves the kernel as it is: a restarted daemon adopts its own state,
and traffic keeps flowing meanwhile.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Iterator, Mapping, Protocol, Sequence

from proxyd.config import Config
from proxyd.health import HealthCheck, Heartbeat, HTTPEndpoint
from proxyd.k8s import cache
from proxyd.k8s.client import KINDS, KubeClient, build_configuration, resolve_node_name
from proxyd.k8s.informer import Informer
from proxyd.k8s.reachability import Reachability
from proxyd.k8s.tracker import Change, ChangeTracker
from proxyd.metrics import Metrics, metrics_endpoint
from proxyd.runner import BoundedFrequencyRunner

log = logging.getLogger(__name__)

INDEXERS = {
    "pods": {"node": cache.pods_by_node, "namespace": cache.by_namespace},
    "endpointslices": {"service": cache.slices_by_service},
    "networkpolicies": {"namespace": cache.by_namespace},
}
RETRY_INTERVAL = 1.0


class DaemonError(Exception):
    """The daemon cannot start (caches never synced, a port is taken, ...)."""


class SyncContext:
    """What a controller's sync sees: the stores and the changes since its last success.

    Walking the changes through ``each_change()`` lets a failure name the
    object that was being processed.
    """

    def __init__(self, stores: Mapping[str, cache.Store], changes: list[Change],
                 full: bool = True):
        self.stores, self.changes, self.full = stores, changes, full
        self.current: Change | None = None

    def each_change(self) -> Iterator[Change]:
        for change in self.changes:
            self.current = change
            yield change
        self.current = None


class SyncFailed(Exception):
    """A controller's sync raised; the message names the object it was working on."""


class Controller(Protocol):
    name: str
    kinds: tuple[str, ...]
    sync_period: float
    min_sync_interval: float

    def sync(self, ctx: SyncContext) -> None: ...


class Daemon:
    def __init__(self, config: Config, controllers: Sequence[Controller], *,
                 client: KubeClient | None = None, metrics: Metrics | None = None,
                 informer_options: Mapping | None = None):
        self.config, self.controllers = config, list(controllers)
        self.node_name = resolve_node_name(config.hostname_override)
        self.metrics = metrics or Metrics()
        self._client = client
        self._informer_options = dict(informer_options or {})
        # One probe of the API server for all informers, run only while it seems gone.
        self.api_server = Reachability(lambda: self._client.probe())
        self.informers: dict[str, Informer] = {}
        self.runners: dict[str, BoundedFrequencyRunner] = {}
        self.endpoints: list[HTTPEndpoint] = []
        # Per controller, the resourceVersion of every kind its last successful sync saw.
        self.synced_versions: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        if self._client is None:
            self._client = KubeClient(build_configuration(self.config.kubeconfig, self.config.master))
        for kind in sorted({k for c in self.controllers for k in c.kinds}):
            self.informers[kind] = Informer(self._client, KINDS[kind], indexers=INDEXERS.get(kind),
                                            count_event=self.metrics.count_event,
                                            reachability=self.api_server,
                                            **self._informer_options)
        for controller in self.controllers:
            self._wire(controller)
        self._start_endpoints()
        self.api_server.start()
        for informer in self.informers.values():
            informer.start()
        self._wait_for_caches()
        for runner in self.runners.values():
            runner.start()
            runner.request()
        log.info("kube-router started on node %s: %s", self.node_name,
                 ", ".join(c.name for c in self.controllers))

    def _wire(self, controller: Controller) -> None:
        stores = {kind: self.informers[kind].store for kind in controller.kinds}
        runner = BoundedFrequencyRunner(
            controller.name, lambda full: self._sync(controller, stores, tracker, versions, full),
            min_interval=controller.min_sync_interval, max_interval=controller.sync_period,
            retry_interval=min(RETRY_INTERVAL, controller.sync_period),
            observer=self.metrics.observe_sync)
        tracker = ChangeTracker(wake=runner.request)
        versions = {kind: self.informers[kind] for kind in controller.kinds}
        # A controller's relevant(kind, old, new) drops changes it does not read: they wake nothing.
        relevant = getattr(controller, "relevant", lambda kind, old, new: True)

        def record(kind: str, old, new) -> None:
            if relevant(kind, old, new):
                tracker.record(kind, old, new)
        for kind in controller.kinds:
            self.informers[kind].add_handler(lambda _kind, old, new, k=kind: record(k, old, new))
        self.runners[controller.name] = runner
        self.metrics.add_controller(controller.name)
        bind = getattr(controller, "bind_runner", None)
        if bind is not None:      # a controller with events of its own (gobgpd's watch)
            bind(runner.request)

    def _sync(self, controller: Controller, stores, tracker: ChangeTracker,
              informers: Mapping[str, Informer], full: bool) -> None:
        # Read before the stores: the sync then covers at least these versions.
        seen = {kind: informer.resource_version for kind, informer in informers.items()}
        ctx = SyncContext(stores, tracker.take(), full)
        try:
            controller.sync(ctx)
        except Exception as e:
            tracker.give_back(ctx.changes)
            where = (f" at {ctx.current.kind} {ctx.current.key}" if ctx.current else "")
            raise SyncFailed(f"{controller.name}{where}: {type(e).__name__}: {e}") from e
        self.synced_versions[controller.name] = seen

    def status(self) -> tuple[int, str, bytes]:
        """/statusz: per controller, its last successful sync and the resourceVersions it
        covered, so a caller that just wrote to the API can tell when the node caught up;
        whether the API server answers and since when it has not (no address, no error text:
        /statusz is served without authentication)."""
        body = {name: {"last_sync": runner.heartbeat,
                       "resource_versions": self.synced_versions.get(name, {})}
                for name, runner in self.runners.items()}
        doc = {"api_server": self.api_server.status(), "controllers": body}
        return 200, "application/json", (json.dumps(doc, indent=1) + "\n").encode()

    def _wait_for_caches(self) -> None:
        deadline = time.monotonic() + self.config.cache_sync_timeout.total_seconds()
        for kind, informer in self.informers.items():
            if not informer.wait_for_sync(max(0.0, deadline - time.monotonic())):
                raise DaemonError(f"the {kind} cache did not sync within --cache-sync-timeout="
                                  f"{self.config.cache_sync_timeout.total_seconds():g}s")

    def _start_endpoints(self) -> None:
        c = self.config
        try:
            if c.health_port:
                check = HealthCheck([Heartbeat(ctl.name, ctl.sync_period,
                                               lambda r=self.runners[ctl.name]: r.heartbeat)
                                     for ctl in self.controllers])
                self.endpoints.append(HTTPEndpoint(c.health_addr, c.health_port,
                                                   {"/healthz": check.respond,
                                                    "/statusz": self.status}).start())
            if c.metrics_port:
                self.endpoints.append(metrics_endpoint(self.metrics, c.metrics_addr, c.metrics_port,
                                                       c.metrics_path).start())
        except OSError as e:
            raise DaemonError(f"cannot listen for health/metrics: {e}") from e

    def stop(self) -> None:
        """Stop informers, runners and endpoints; kernel state is left exactly as it is."""
        for runner in self.runners.values():
            runner.stop()
        for controller in self.controllers:
            stop = getattr(controller, "stop", None)
            if stop is not None:  # child processes (gobgpd) go; kernel state stays
                try:
                    stop()
                except Exception:
                    log.exception("%s: stopping failed", controller.name)
        for informer in self.informers.values():
            informer.stop()
        self.api_server.stop()
        for endpoint in self.endpoints:
            endpoint.stop()
        if self._client is not None:
            self._client.close()


def runnable(controllers: Sequence[Controller]) -> list[Controller]:
    """The controllers this kernel can run. One left out is logged once, with what to do,
    and the others run: a sync that can only fail would log it on every retry."""
    ready = []
    for controller in controllers:
        preflight = getattr(controller, "preflight", None)
        problem = preflight() if preflight is not None else None
        if problem:
            log.error("%s not started: %s", controller.name, problem)
        else:
            ready.append(controller)
    return ready


def run(config: Config, controllers: Sequence[Controller], **daemon_options) -> int:
    """Run until SIGTERM or SIGINT; 0 on a clean stop, 1 if the daemon cannot start."""
    logging.basicConfig(level=logging.DEBUG if config.v >= 2 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controllers = runnable(controllers)
    if not any(c.kinds for c in controllers):     # the localnet guard alone is no reason to run
        log.error("cannot start: no controller to run")
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = Daemon(config, controllers, **daemon_options)
    try:
        daemon.start()
    except Exception as e:
        log.error("cannot start: %s", e)
        daemon.stop()
        return 1
    while not stop.wait(1.0):
        pass
    log.info("stopping: informers and runners; kernel state is left in place")
    daemon.stop()
    return 0
