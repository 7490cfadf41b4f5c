"""/healthz from heartbeats, /metrics families, both over HTTP on 127.0.0.1."""

import pytest

from fakeapi import http_get as get

from proxyd.health import HealthCheck, Heartbeat, HTTPEndpoint
from proxyd.metrics import Metrics, metrics_endpoint


class Clock:
    now = 5000.0

    def __call__(self):
        return self.now


@pytest.fixture
def health():
    clock, beats = Clock(), {"firewall": None, "router": None}
    check = HealthCheck([Heartbeat("firewall", 300, lambda: beats["firewall"]),
                         Heartbeat("router", 60, lambda: beats["router"])], margin=5, clock=clock)
    endpoint = HTTPEndpoint("127.0.0.1", 0, {"/healthz": check.respond}).start()
    yield clock, beats, endpoint.port
    endpoint.stop()


def test_fresh_heartbeats_are_healthy(health):
    clock, beats, port = health
    clock.now += 30
    beats.update(firewall=clock.now - 10, router=clock.now - 64)
    assert get(port, "/healthz") == (200, "ok\n")


def test_start_up_counts_as_a_heartbeat_until_the_period_passes(health):
    clock, beats, port = health
    clock.now += 66
    assert get(port, "/healthz") == (500, "unhealthy: router: last sync 66s ago (sync period 60s)\n")


def test_one_stale_controller_is_named(health):
    clock, beats, port = health
    clock.now += 1000
    beats.update(firewall=clock.now - 306, router=clock.now - 1)
    status, body = get(port, "/healthz")
    assert status == 500 and "firewall: last sync 306s ago" in body and "router" not in body


def test_unknown_path_is_404(health):
    assert get(health[2], "/nope")[0] == 404


def test_metrics_endpoint_serves_the_families():
    metrics = Metrics(wall_clock=lambda: 1700000000.0)
    metrics.add_controller("firewall")
    metrics.count_event("Pod", "ADDED")
    metrics.count_event("Pod", "ADDED")
    metrics.count_event("Service", "DELETED")
    metrics.observe_sync("firewall", 0.02, None)
    metrics.observe_sync("firewall", 0.5, RuntimeError("x"))
    endpoint = metrics_endpoint(metrics, "127.0.0.1", 0, "/custom-metrics").start()
    try:
        status, body = get(endpoint.port, "/custom-metrics")
        assert get(endpoint.port, "/metrics")[0] == 404
    finally:
        endpoint.stop()
    assert status == 200
    lines = set(body.splitlines())
    assert 'kube_router_informer_events_total{kind="Pod",type="ADDED"} 2.0' in lines
    assert 'kube_router_informer_events_total{kind="Service",type="DELETED"} 1.0' in lines
    assert 'kube_router_controller_sync_duration_seconds_count{controller="firewall"} 2.0' in lines
    assert 'kube_router_controller_sync_duration_seconds_bucket{controller="firewall",le="0.05"} 1.0' in lines
    assert 'kube_router_controller_sync_errors_total{controller="firewall"} 1.0' in lines
    assert 'kube_router_controller_last_sync_timestamp_seconds{controller="firewall"} 1.7e+09' in lines
