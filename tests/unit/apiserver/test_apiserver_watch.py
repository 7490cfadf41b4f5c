"""Watch through kubernetes.watch.Watch: order, resourceVersions, bookmarks, 410, timeouts."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from apiserver_helpers import pod_body
from apiserver_helpers import make_client
from krsim.apiserver.kinds import NAMESPACES


def test_events_in_order_with_increasing_rvs(core):
    start_rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod_body("p", {"v": "1"}))
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_pod("p", "default")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "default",
                                      resource_version=start_rv, timeout_seconds=1):
        seen.append((event["type"], event["object"].metadata.labels,
                     int(event["object"].metadata.resource_version)))
    assert [(t, lbl) for t, lbl, _ in seen] == [("ADDED", {"v": "1"}), ("MODIFIED", {"v": "2"}),
                                               ("DELETED", {"v": "2"})]
    rvs = [rv for *_, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3 and rvs[0] > int(start_rv)


def test_watch_without_rv_starts_with_current_state(core):
    core.create_namespaced_pod("default", pod_body("existing"))
    events = list(watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "existing")]


def test_bookmarks_carry_current_rv(apiserver, core):
    rv = core.list_namespaced_pod("default").metadata.resource_version
    created = core.create_namespaced_pod("default", pod_body("p"))
    url = (f"{apiserver.url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
           "&allowWatchBookmarks=true&timeoutSeconds=2")
    with urllib.request.urlopen(url, timeout=10) as resp:
        events = [json.loads(line) for line in resp]
    assert events[0]["type"] == "ADDED"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    # 2 s of stream at a 0.5 s interval.
    assert 2 <= len(bookmarks) <= 5
    assert bookmarks[-1]["object"]["metadata"]["resourceVersion"] == \
        created.metadata.resource_version
    assert bookmarks[-1]["object"]["kind"] == "Pod"


def test_client_handles_bookmarks(core):
    rv = core.list_namespaced_pod("default").metadata.resource_version
    w = watch.Watch()
    types = [e["type"] for e in w.stream(core.list_namespaced_pod, "default", resource_version=rv,
                                         allow_watch_bookmarks=True, timeout_seconds=2)]
    assert "BOOKMARK" in types
    assert int(w.resource_version) >= int(rv)


def test_selector_transitions(core):
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod_body("p", {"app": "other"}))
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "gone"}}})
    events = list(watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv,
                                       label_selector="app=web", timeout_seconds=1))
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


def test_expired_after_compaction(server_factory):
    server = server_factory(history=5)
    with make_client(server) as api:
        core = client.CoreV1Api(api)
        old_rv = core.list_namespaced_pod("default").metadata.resource_version
        for i in range(10):
            core.create_namespaced_pod("default", pod_body(f"p{i}"))
        url = (f"{server.url}/api/v1/namespaces/default/pods?watch=1"
               f"&resourceVersion={old_rv}&timeoutSeconds=5")
        with urllib.request.urlopen(url, timeout=10) as resp:
            events = [json.loads(line) for line in resp]
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["code"], status["reason"]) == (410, "Expired")
        assert status["message"].startswith(f"too old resource version: {old_rv} (")
        # The official client retries once, then raises 410.
        with pytest.raises(ApiException) as caught:
            for _ in watch.Watch().stream(core.list_namespaced_pod, "default",
                                          resource_version=old_rv, timeout_seconds=5):
                pass
        assert caught.value.status == 410


def test_watch_ends_at_timeout(core):
    began = time.monotonic()
    assert list(watch.Watch().stream(core.list_node, timeout_seconds=1)) == []
    assert 0.9 <= time.monotonic() - began < 3


def test_shutdown_ends_streams(server_factory):
    server = server_factory()
    url = f"{server.url}/api/v1/pods?watch=1&resourceVersion=1&timeoutSeconds=60"
    finished = []
    streaming = threading.Barrier(21)

    def reader():
        with urllib.request.urlopen(url, timeout=30) as resp:
            streaming.wait()
            finished.append(resp.read())

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for t in threads:
        t.start()
    streaming.wait(timeout=10)
    began = time.monotonic()
    server.stop()
    for t in threads:
        t.join(timeout=10)
    # Each stream ended with its final chunk (a cut-off stream raises IncompleteRead).
    assert finished == [b""] * 20 and time.monotonic() - began < 5


def test_restart_keeps_address_objects_and_history(server_factory):
    """An API server restart over the same etcd: a watch resumes from a version seen before."""
    server = server_factory()
    url = server.url
    with make_client(server) as api:
        core = client.CoreV1Api(api)
        before = core.create_namespace({"metadata": {"name": "before"}}).metadata.resource_version
        server.stop()
        with pytest.raises(OSError):      # nothing listens while it is down
            urllib.request.urlopen(f"{url}/readyz", timeout=2)
        server.registry.create(NAMESPACES, "", {"metadata": {"name": "while-down"}})
        server.start()
        assert server.url == url
        assert {"before", "while-down"} <= {n.metadata.name for n in core.list_namespace().items}
        events = watch.Watch().stream(core.list_namespace, resource_version=before,
                                      timeout_seconds=1)
        assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "while-down")]


def test_many_watchers_and_latency(apiserver, core):
    """Every watcher sees the write; report the write-to-client latency."""
    rv = core.list_namespaced_pod("default").metadata.resource_version
    url = (f"{apiserver.url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
           "&timeoutSeconds=10")
    arrivals: list[float] = []
    ready = threading.Barrier(21)

    def reader():
        with urllib.request.urlopen(url, timeout=15) as resp:
            ready.wait()
            resp.readline()
            arrivals.append(time.perf_counter())

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.1)
    wrote = time.perf_counter()
    core.create_namespaced_pod("default", pod_body("p"))
    for t in threads:
        t.join(timeout=15)
    latencies = sorted(a - wrote for a in arrivals)
    print(f"\nwatch latency over 20 watchers: median {latencies[10] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    assert len(latencies) == 20 and latencies[-1] < 1.0


def test_list_1000_pods(core):
    for i in range(1000):
        core.create_namespaced_pod("default", pod_body(f"p{i:04d}", {"app": "bulk"}))
    began = time.perf_counter()
    pods = core.list_namespaced_pod("default", label_selector="app=bulk").items
    took = time.perf_counter() - began
    raw_began = time.perf_counter()
    raw = core.list_namespaced_pod("default", _preload_content=False).read()
    raw_took = time.perf_counter() - raw_began
    print(f"\nlist 1,000 pods: {took * 1000:.0f} ms with client models, "
          f"{raw_took * 1000:.0f} ms raw ({len(raw)} bytes)")
    assert len(pods) == 1000 and took < 10
