"""Informers against a local API server: list, watch, bookmarks, 410, outages, has_synced."""
import statistics
import threading
import time

import pytest

from proxyd.k8s.cache import pods_by_node
from proxyd.k8s.client import KINDS
from proxyd.k8s.informer import Informer
from proxyd.runner import Backoff

PODS, NODES = KINDS["pods"], KINDS["nodes"]


class Recorder:
    def __init__(self):
        self.events = []
        self.times = []
        self.cond = threading.Condition()

    def __call__(self, kind, old, new):
        with self.cond:
            type_ = "DELETED" if new is None else "ADDED" if old is None else "MODIFIED"
            name = (new or old)["metadata"]["name"]
            self.events.append((type_, name))
            self.times.append(time.monotonic())
            self.cond.notify_all()

    def wait(self, count, timeout=5.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= count, timeout), self.events
        return self.events


def until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def start(kube):
    made = []

    def make(kind=PODS, **options):
        options.setdefault("rng", lambda: 0.0)
        options.setdefault("backoff", Backoff(0.1, 1.0, jitter=0.0))
        inf = Informer(kube, kind, **options)
        rec = Recorder()
        inf.add_handler(rec)
        made.append(inf)
        inf.start()
        return inf, rec
    yield make
    for inf in made:
        inf.stop()


def test_initial_list_then_synced(api, start):
    api.put(PODS.path, "a", "default", spec={"nodeName": "n1"})
    api.put(PODS.path, "b", "kube-system", spec={"nodeName": "n2"})
    inf, rec = start(indexers={"node": pods_by_node})
    assert inf.wait_for_sync(5)
    assert sorted(rec.wait(2)) == [("ADDED", "a"), ("ADDED", "b")]
    assert [p["metadata"]["name"] for p in inf.store.by_index("node", "n2")] == ["b"]
    assert inf.store.get("default/a")["spec"]["nodeName"] == "n1"


def test_not_synced_until_a_list_succeeds(api, start):
    api.fail_lists = 3
    inf, _ = start()
    assert not inf.wait_for_sync(0.25)
    assert inf.wait_for_sync(5) and len(api.list_times) == 4


def test_watch_events_in_order_and_fast(api, start):
    inf, rec = start()
    assert inf.wait_for_sync(5)
    until(lambda: api.watch_requests)
    for i in range(20):
        api.put(PODS.path, f"p{i}", "default")
    api.put(PODS.path, "p0", "default", spec={"nodeName": "n9"})
    api.delete(PODS.path, "default/p1")
    events = rec.wait(22)
    assert events[:20] == [("ADDED", f"p{i}") for i in range(20)]
    assert events[20:] == [("MODIFIED", "p0"), ("DELETED", "p1")]
    latencies = [rec.times[i] - api.watch_writes[i][0] for i in range(20)]
    median = statistics.median(latencies)
    print(f"\nevent latency server write -> handler: median {median * 1e3:.2f} ms, "
          f"max {max(latencies) * 1e3:.2f} ms")
    assert max(latencies) < 0.25
    assert inf.lists == 1


def test_bookmark_lets_the_watch_resume_past_compaction(api, start):
    inf, rec = start(watch_timeout=1.0)
    assert inf.wait_for_sync(5) and until(lambda: api.watch_requests)
    listed_rv = api.rv
    for i in range(3):                  # other kinds move the global resourceVersion on
        api.put(NODES.path, f"n{i}")
    api.bookmark(PODS.path)
    api.compact()
    # The first watch ends after its 1 s timeout; the next resumes from the bookmark.
    assert until(lambda: len(api.watch_requests) >= 2)
    assert api.watch_requests[0] == (PODS.path, listed_rv)
    assert api.watch_requests[1] == (PODS.path, api.rv)
    assert inf.lists == 1 and rec.events == []


def test_gone_relists_at_once_without_spurious_events(api, start):
    api.put(PODS.path, "keep", "default")
    inf, rec = start(watch_timeout=1.0)
    rec.wait(1)
    assert until(lambda: api.watch_requests)
    api.put(NODES.path, "other")        # moves the resourceVersion past ours; no bookmark
    api.compact()
    assert until(lambda: inf.lists == 2)
    # 1 s watch timeout, then the 410 and an immediate list: no backoff in between
    assert api.list_times[1] - api.list_times[0] < 1.5
    time.sleep(0.1)
    assert rec.events == [("ADDED", "keep")]     # the re-list found nothing new


def test_dropped_connection_relists_with_growing_backoff(api, start):
    inf, rec = start()
    assert inf.wait_for_sync(5) and until(lambda: api.watch_requests)
    api.fail_lists = 2
    api.drop_watches()
    assert until(lambda: inf.lists == 2, timeout=5)
    t = api.list_times
    assert len(t) == 4
    gaps = [t[2] - t[1], t[3] - t[2]]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps     # 0.1 s after the drop, then 0.2, 0.4
    api.put(PODS.path, "after", "default")
    assert rec.wait(1) == [("ADDED", "after")]


def test_object_deleted_while_disconnected_is_reported(api, start):
    api.put(PODS.path, "ghost", "default")
    api.put(PODS.path, "stays", "default")
    inf, rec = start()
    rec.wait(2)
    until(lambda: api.watch_requests)
    api.delete(PODS.path, "default/ghost", silent=True)   # the watch never hears of it
    api.drop_watches()
    events = rec.wait(3)
    assert events[2] == ("DELETED", "ghost")
    assert inf.store.get("default/ghost") is None and inf.store.get("default/stays")


def test_stop_unblocks_a_waiting_watch(api, start):
    inf, _ = start()
    assert inf.wait_for_sync(5) and until(lambda: api.watch_requests)
    began = time.monotonic()
    inf.stop()
    assert time.monotonic() - began < 1.0
    assert not inf._thread.is_alive()


def test_one_informer_per_kind_all_six(api, start):
    for name, kind in KINDS.items():
        api.put(kind.path, f"one-{name}", "default" if kind.namespaced else None)
    informers = [(name, *start(kind)) for name, kind in KINDS.items()]
    for name, inf, rec in informers:
        assert inf.wait_for_sync(5), name
        assert rec.wait(1) == [("ADDED", f"one-{name}")]
    assert sorted(KINDS) == ["endpointslices", "namespaces", "networkpolicies", "nodes", "pods", "services"]


def test_resource_version_follows_list_events_and_bookmarks(api, start):
    """What a controller's sync reports as covered: never ahead of what is in the store."""
    api.put(PODS.path, "a", "default")
    inf, rec = start()
    assert inf.wait_for_sync(5) and int(inf.resource_version) == api.rv
    until(lambda: api.watch_requests)
    api.put(PODS.path, "b", "default")
    rec.wait(2)
    assert until(lambda: int(inf.resource_version) == api.rv)
    assert inf.store.get("default/b") is not None
    api.put(NODES.path, "n1")              # another kind moves the global version on...
    assert int(inf.resource_version) < api.rv
    api.bookmark(PODS.path)                # ...and a bookmark catches the pods informer up
    assert until(lambda: int(inf.resource_version) == api.rv)
