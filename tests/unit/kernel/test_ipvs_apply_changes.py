"""The IPVS applier's incremental writes: only the changed services, without reading the table."""
from __future__ import annotations

import pytest

from helpers.ipvs import FakeIPVS
from proxyd.kernel.ipvs import IPVSApplier, IPVSSyncError
from proxyd.kernel.state import Destination, VirtualService

VIP = "10.96.0.10"


def ours(protocol, address, port):
    return address.startswith("10.96.")


def web(*backends, address=VIP, **kw) -> VirtualService:
    return VirtualService("TCP", address, 80, destinations=tuple(
        Destination(a, 8080) for a in backends), **kw)


def key(vs):
    return vs.protocol, vs.address, vs.port


@pytest.fixture
def synced():
    kernel = FakeIPVS()
    applier = IPVSApplier(ours, ipvs=kernel)
    table = [web("10.244.0.2", "10.244.1.2", address=f"10.96.0.{i}") for i in range(10, 30)]
    applier.sync(table)
    kernel.calls.clear()
    return kernel, applier, table


def test_one_endpoint_change_is_one_destination_call_and_no_dump(synced):
    kernel, applier, table = synced
    moved = web("10.244.0.2", "10.244.2.2")

    lines = applier.apply_changes({key(moved): moved})

    assert kernel.calls == [("dest", "del"), ("dest", "add")]
    assert lines == ["delete destination TCP 10.96.0.10:80 -> 10.244.1.2:8080",
                     "add destination TCP 10.96.0.10:80 -> 10.244.2.2:8080 masq weight 1"]
    fresh = FakeIPVS()
    IPVSApplier(ours, ipvs=fresh).sync([moved] + table[1:])
    assert kernel.table() == fresh.table()


def test_a_new_service_a_gone_one_and_a_new_scheduler(synced):
    kernel, applier, table = synced
    new, resched = web("10.244.3.2", address="10.96.1.1"), web(
        "10.244.0.2", "10.244.1.2", address="10.96.0.11", scheduler="sh")

    applier.apply_changes({key(new): new, key(table[0]): None, key(resched): resched})

    assert kernel.calls == [("service", "del"), ("service", "set"), ("service", "add"),
                            ("dest", "add")]
    assert (6, VIP, 80) not in kernel.services
    assert kernel.svc(6, "10.96.0.11", 80)["sched_name"] == "sh"
    assert list(kernel.svc(6, "10.96.1.1", 80)["dests"]) == [("10.244.3.2", 8080)]
    assert applier.apply_changes({}) == [] and kernel.calls[4:] == []


def test_nothing_to_change_before_a_reading_sync():
    with pytest.raises(RuntimeError, match="sync"):
        IPVSApplier(ours, ipvs=FakeIPVS()).apply_changes({})


def test_a_service_not_ours_is_refused(synced):
    _, applier, _ = synced
    theirs = web("10.244.0.2", address="192.0.2.1")
    with pytest.raises(ValueError, match="not ours"):
        applier.apply_changes({key(theirs): theirs})


def test_a_failure_forgets_what_was_applied_and_the_next_sync_repairs(synced):
    kernel, applier, table = synced
    broken = web("10.244.0.2", scheduler="nope")
    with pytest.raises(IPVSSyncError, match="scheduler 'nope'"):
        applier.apply_changes({key(broken): broken})
    assert not applier.has_applied
    with pytest.raises(RuntimeError):
        applier.apply_changes({})
    applier.sync(table)              # reads, and puts back what the failed write half did
    assert applier.has_applied
    fresh = FakeIPVS()
    IPVSApplier(ours, ipvs=fresh).sync(table)
    assert kernel.table() == fresh.table()


def test_drift_is_left_alone_by_changes_and_repaired_by_the_sync(synced):
    kernel, applier, table = synced
    del kernel.svc(6, "10.96.0.12", 80)["dests"][("10.244.1.2", 8080)]      # by hand
    other = web("10.244.0.2", address="10.96.0.13")

    applier.apply_changes({key(other): other})
    assert ("10.244.1.2", 8080) not in kernel.svc(6, "10.96.0.12", 80)["dests"]

    repaired = applier.sync(table)
    assert repaired == ["add destination TCP 10.96.0.12:80 -> 10.244.1.2:8080 masq weight 1",
                        "add destination TCP 10.96.0.13:80 -> 10.244.1.2:8080 masq weight 1"]


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_graceful_reads_only_the_service_it_drains_and_finishes_on_a_later_change():
    kernel, clock = FakeIPVS(), Clock()
    applier = IPVSApplier(ours, ipvs=kernel, graceful=30.0, clock=clock)
    a, b = web("10.244.0.2", "10.244.1.2"), web("10.244.0.3", address="10.96.0.11")
    applier.sync([a, b])
    kernel.svc(6, VIP, 80)["dests"][("10.244.1.2", 8080)]["active"] = 3
    kernel.calls.clear()

    shrunk = web("10.244.0.2")
    applier.apply_changes({key(shrunk): shrunk})
    assert kernel.calls == [("dest", "dump"), ("dest", "set")]
    assert kernel.svc(6, VIP, 80)["dests"][("10.244.1.2", 8080)]["weight"] == 0
    assert applier.draining

    kernel.svc(6, VIP, 80)["dests"][("10.244.1.2", 8080)]["active"] = 0
    kernel.calls.clear()
    applier.apply_changes({})
    assert kernel.calls == [("dest", "dump"), ("dest", "del")]
    assert list(kernel.svc(6, VIP, 80)["dests"]) == [("10.244.0.2", 8080)]
    assert not applier.draining
