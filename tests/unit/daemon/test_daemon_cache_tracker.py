"""The store's list diff and indexes; the tracker's merging of changes."""
from proxyd.k8s.cache import Store, pods_by_node, slices_by_service
from proxyd.k8s.tracker import ChangeTracker


def pod(name, rv, node=None, ns="default"):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)},
            "spec": {"nodeName": node} if node else {}}


def names(changes):
    return [((old or new)["metadata"]["name"],
             "DELETED" if new is None else "ADDED" if old is None else "MODIFIED") for old, new in changes]


def test_replace_reports_only_real_changes_and_vanished_keys():
    s = Store()
    assert names(s.replace([pod("a", 1), pod("b", 1)])) == [("a", "ADDED"), ("b", "ADDED")]
    assert s.replace([pod("a", 1), pod("b", 1)]) == []                  # same versions: nothing
    assert names(s.replace([pod("a", 2), pod("c", 1)])) == [("b", "DELETED"), ("a", "MODIFIED"), ("c", "ADDED")]
    assert [p["metadata"]["name"] for p in s.list()] == ["a", "c"]


def test_apply_drops_noops_and_unknown_deletes():
    s = Store()
    assert s.apply(pod("a", 1)) == (None, pod("a", 1))
    assert s.apply(pod("a", 1)) is None
    assert s.apply(pod("zz", 3), deleted=True) is None
    assert s.apply(pod("a", 4), deleted=True) == (pod("a", 1), None)
    assert len(s) == 0


def test_index_follows_moves_and_deletes():
    s = Store({"node": pods_by_node})
    s.replace([pod("a", 1, "n1"), pod("b", 1, "n1"), pod("c", 1)])
    assert [p["metadata"]["name"] for p in s.by_index("node", "n1")] == ["a", "b"]
    s.apply(pod("a", 2, "n2"))
    s.apply(pod("b", 2, "n1"), deleted=True)
    assert s.by_index("node", "n1") == [] and [p["metadata"]["name"] for p in s.by_index("node", "n2")] == ["a"]


def test_slices_indexed_by_service():
    eps = {"metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "1",
                        "labels": {"kubernetes.io/service-name": "web"}}}
    s = Store({"service": slices_by_service})
    s.replace([eps])
    assert s.by_index("service", "shop/web") == [eps]


def test_snapshot_is_not_affected_by_later_changes():
    s = Store()
    s.replace([pod("a", 1)])
    snap = s.snapshot()
    s.apply(pod("b", 1))
    assert list(snap) == ["default/a"]


def test_tracker_merges_to_first_previous_and_last_current():
    wakes = []
    t = ChangeTracker(wake=lambda: wakes.append(1))
    t.record("pods", None, pod("a", 1))
    t.record("pods", pod("a", 1), pod("a", 2))
    t.record("pods", pod("a", 2), pod("a", 3))
    [c] = t.take()
    assert (c.previous, c.current["metadata"]["resourceVersion"]) == (None, "3")
    assert len(wakes) == 3 and len(t) == 0


def test_tracker_drops_came_and_went():
    t = ChangeTracker()
    t.record("pods", None, pod("a", 1))
    t.record("pods", pod("a", 1), None)
    assert t.take() == []


def test_tracker_give_back_keeps_oldest_previous_under_newer_current():
    t = ChangeTracker()
    t.record("pods", pod("a", 1), pod("a", 2))
    failed = t.take()
    t.record("pods", pod("a", 2), pod("a", 3))
    t.give_back(failed)
    [c] = t.take()
    assert c.previous == pod("a", 1) and c.current == pod("a", 3)


def test_tracker_sorted_by_kind_and_key():
    t = ChangeTracker()
    t.record("services", None, pod("s", 1))
    t.record("pods", None, pod("b", 1))
    t.record("pods", None, pod("a", 1))
    assert [(c.kind, c.key) for c in t.take()] == [("pods", "default/a"), ("pods", "default/b"),
                                                   ("services", "default/s")]
