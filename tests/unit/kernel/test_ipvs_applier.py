"""The IPVS applier against a stateful model of the kernel's IPVS table (tests/helpers/ipvs.py)."""
from __future__ import annotations

import logging

import pytest

from helpers.ipvs import FakeIPVS
from proxyd.kernel.ipvs import F_HASHED, IPVSApplier, IPVSSyncError
from proxyd.kernel.state import Destination, VirtualService
VIP, VIP2, VIP6 = "10.96.0.10", "10.96.0.11", "fd00:96::10"


def in_service_cidr(protocol, address, port):
    return address.startswith("10.96.") or address.startswith("fd00:96:")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def kernel():
    return FakeIPVS()


def web(*backends, **kw) -> VirtualService:
    return VirtualService("TCP", kw.pop("address", VIP), kw.pop("port", 80),
                          destinations=tuple(Destination(a, 8080) for a in backends), **kw)


def test_creates_services_and_destinations_then_converges(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    desired = [web("10.200.1.2", "10.200.2.2"),
               VirtualService("UDP", VIP, 53, "wrr", destinations=(
                   Destination("10.200.1.2", 5353, weight=3),))]

    changed = applier.sync(desired)

    assert kernel.table() == {
        (6, VIP, 80): ("rr", F_HASHED, 0, {("10.200.1.2", 8080): (0, 1),
                                            ("10.200.2.2", 8080): (0, 1)}),
        (17, VIP, 53): ("wrr", F_HASHED, 0, {("10.200.1.2", 5353): (0, 3)}),
    }
    assert changed == ["add service TCP 10.96.0.10:80 rr",
                       "add destination TCP 10.96.0.10:80 -> 10.200.1.2:8080 masq weight 1",
                       "add destination TCP 10.96.0.10:80 -> 10.200.2.2:8080 masq weight 1",
                       "add service UDP 10.96.0.10:53 wrr",
                       "add destination UDP 10.96.0.10:53 -> 10.200.1.2:5353 masq weight 3"]
    assert applier.sync(desired) == []


def test_forwarding_methods_reach_the_kernel_as_ipvs_numbers(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    applier.sync([VirtualService("TCP", VIP, 80, destinations=(
        Destination("10.200.1.2", 80, forward="masq"),
        Destination("10.200.2.2", 80, forward="tunnel"),
        Destination("10.200.3.2", 80, forward="route")))])

    dests = kernel.svc(6, VIP, 80)["dests"]
    assert {d: v["fwd_method"] for d, v in dests.items()} == {
        ("10.200.1.2", 80): 0, ("10.200.2.2", 80): 2, ("10.200.3.2", 80): 3}


def test_changed_scheduler_persistence_and_flags_edit_the_service_in_place(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    applier.sync([web("10.200.1.2")])
    before = kernel.svc(6, VIP, 80)
    before["dests"][("10.200.1.2", 8080)]["active"] = 5     # live connections

    changed = applier.sync([web("10.200.1.2", scheduler="sh", persistent=10800,
                                flags=frozenset({"flag-1", "flag-2"}))])

    after = kernel.svc(6, VIP, 80)
    assert after["generation"] == before["generation"], "the service was recreated"
    assert (after["sched_name"], after["flags"], after["timeout"]) == (
        "sh", F_HASHED | 0x1 | 0x8 | 0x10, 10800)
    assert after["dests"][("10.200.1.2", 8080)]["active"] == 5
    assert changed == ["set service TCP 10.96.0.10:80 sh persistent 10800s flags flag-1,flag-2 "
                       "(was rr)"]
    assert applier.sync([web("10.200.1.2", scheduler="sh", persistent=10800,
                             flags=frozenset({"flag-1", "flag-2"}))]) == []


def test_the_hashed_flag_the_kernel_always_sets_causes_no_edit(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    desired = [web("10.200.1.2", flags=frozenset({"hashed"}))]
    applier.sync(desired)
    assert applier.sync(desired) == []
    assert applier.sync([web("10.200.1.2")]) == []


def test_destinations_are_diffed_and_an_unchanged_one_keeps_its_connections(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    applier.sync([web("10.200.1.2", "10.200.2.2")])
    kept = kernel.svc(6, VIP, 80)["dests"][("10.200.1.2", 8080)]
    kept["active"] = 7

    changed = applier.sync([VirtualService("TCP", VIP, 80, destinations=(
        Destination("10.200.1.2", 8080), Destination("10.200.3.2", 8080, weight=2)))])

    dests = kernel.svc(6, VIP, 80)["dests"]
    assert dests[("10.200.1.2", 8080)] is kept and kept["active"] == 7
    assert set(dests) == {("10.200.1.2", 8080), ("10.200.3.2", 8080)}
    assert changed == ["delete destination TCP 10.96.0.10:80 -> 10.200.2.2:8080",
                       "add destination TCP 10.96.0.10:80 -> 10.200.3.2:8080 masq weight 2"]

    changed = applier.sync([VirtualService("TCP", VIP, 80, destinations=(
        Destination("10.200.1.2", 8080, weight=4), Destination("10.200.3.2", 8080, weight=2)))])
    assert dests[("10.200.1.2", 8080)] is kept and kept["weight"] == 4
    assert changed == ["set destination TCP 10.96.0.10:80 -> 10.200.1.2:8080 masq weight 4 "
                       "(was masq weight 1)"]


def test_foreign_and_fwmark_services_survive_every_sync(kernel):
    kernel.add(6, "192.0.2.1", 443, "wlc", dests=[("198.51.100.1", 443, 1)])
    kernel.add(6, VIP2, 9999, "lc", dests=[("10.200.9.9", 1, 1)])   # in the CIDR, not ours
    kernel.add(None, None, None, "rr", fwmark=42)
    foreign = kernel.table()

    def owned(protocol, address, port):
        return in_service_cidr(protocol, address, port) and port != 9999

    applier = IPVSApplier(owned, ipvs=kernel)

    applier.sync([web("10.200.1.2")])
    applier.sync([])

    assert kernel.table() == foreign


def test_owned_services_no_longer_desired_are_deleted(kernel):
    kernel.add(6, VIP2, 80, "rr", dests=[("10.200.1.2", 8080, 1)])   # a leftover of ours
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)

    changed = applier.sync([web("10.200.1.2")])

    assert set(kernel.services) == {(6, VIP, 80)}
    assert changed[0] == "delete service TCP 10.96.0.11:80"
    assert applier.sync([]) == ["delete service TCP 10.96.0.10:80"]
    assert kernel.services == {}


def test_a_desired_service_owned_does_not_recognise_is_refused_before_any_change(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    with pytest.raises(ValueError, match=r"TCP 192\.0\.2\.1:80 is desired but owned"):
        applier.sync([web("10.200.1.2"), web("10.200.1.2", address="192.0.2.1")])
    assert kernel.services == {}


def test_ipv6_services_carry_the_prefix_length_the_kernel_demands(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    desired = [VirtualService("TCP", "fd00:96:0::10", 80, persistent=60, destinations=(
        Destination("fd00:200:1::2", 8080), Destination("fd00:200:2::2", 8080)))]

    changed = applier.sync(desired)

    assert kernel.table() == {(6, VIP6, 80): ("rr", F_HASHED | 0x1, 60, {
        ("fd00:200:1::2", 8080): (0, 1), ("fd00:200:2::2", 8080): (0, 1)})}
    assert changed[0] == "add service TCP [fd00:96::10]:80 rr persistent 60s"
    assert applier.sync(desired) == []


def test_an_unknown_scheduler_names_the_service_and_the_others_still_apply(kernel, caplog):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    with caplog.at_level(logging.ERROR), pytest.raises(IPVSSyncError) as raised:
        applier.sync([web("10.200.1.2", scheduler="nosuch"), web("10.200.1.2", address=VIP2)])
    assert "TCP 10.96.0.10:80: scheduler 'nosuch' is unknown" in str(raised.value)
    assert "ip_vs_nosuch" in str(raised.value)
    assert set(kernel.services) == {(6, VIP2, 80)}
    assert "TCP 10.96.0.10:80" in caplog.text


def test_a_refused_backend_names_the_service_and_the_destination(kernel):
    applier = IPVSApplier(in_service_cidr, ipvs=kernel)
    with pytest.raises(IPVSSyncError) as raised:
        applier.sync([web("10.200.1.2", "224.0.0.5")])
    text = str(raised.value)
    assert "TCP 10.96.0.10:80: cannot add destination 224.0.0.5:8080" in text
    assert "unicast or local" in text
    assert set(kernel.svc(6, VIP, 80)["dests"]) == {("10.200.1.2", 8080)}
    # Once the controller stops asking for it the service converges.
    assert applier.sync([web("10.200.1.2")]) == []


@pytest.mark.parametrize("bad, match", [
    (VirtualService("ICMP", VIP, 80), "protocol"),
    (web("10.200.1.2", flags=frozenset({"sticky"})), "unknown IPVS flags"),
    (web("fd00::2"), "another family"),
    (VirtualService("TCP", VIP, 80, destinations=(Destination("10.200.1.2", 1, forward="nat"),)),
     "forward"),
])
def test_invalid_services_are_refused_naming_the_service(kernel, bad, match):
    with pytest.raises(ValueError, match=match) as raised:
        IPVSApplier(in_service_cidr, ipvs=kernel).sync([bad])
    assert "10.96.0.10:80" in str(raised.value)
    assert kernel.services == {}


def test_two_different_services_for_one_key_are_refused(kernel):
    with pytest.raises(ValueError, match="two different services for TCP 10.96.0.10:80"):
        IPVSApplier(in_service_cidr, ipvs=kernel).sync(
            [web("10.200.1.2"), web("10.200.1.2", scheduler="lc")])


# ---- graceful termination ------------------------------------------------------------

def graceful(kernel, period=30.0):
    clock = Clock()
    return IPVSApplier(in_service_cidr, ipvs=kernel, graceful=period, clock=clock), clock


def test_graceful_drains_a_busy_destination_then_deletes_it_when_idle(kernel):
    applier, clock = graceful(kernel)
    applier.sync([web("10.200.1.2", "10.200.2.2")])
    leaving = kernel.svc(6, VIP, 80)["dests"][("10.200.2.2", 8080)]
    leaving["active"] = 2

    assert applier.sync([web("10.200.1.2")]) == [
        "drain destination TCP 10.96.0.10:80 -> 10.200.2.2:8080 (2 connections)"]
    assert leaving["weight"] == 0
    clock.now += 5
    assert applier.sync([web("10.200.1.2")]) == []

    leaving["active"] = 0
    clock.now += 1
    assert applier.sync([web("10.200.1.2")]) == [
        "delete destination TCP 10.96.0.10:80 -> 10.200.2.2:8080"]
    assert set(kernel.svc(6, VIP, 80)["dests"]) == {("10.200.1.2", 8080)}


def test_graceful_deletes_a_destination_still_busy_once_the_period_passed(kernel):
    applier, clock = graceful(kernel, period=30)
    applier.sync([web("10.200.1.2", "10.200.2.2")])
    kernel.svc(6, VIP, 80)["dests"][("10.200.2.2", 8080)]["inactive"] = 1   # a UDP flow, TIME_WAIT

    applier.sync([web("10.200.1.2")])
    clock.now += 29
    assert applier.sync([web("10.200.1.2")]) == []
    clock.now += 1
    assert applier.sync([web("10.200.1.2")]) == [
        "delete destination TCP 10.96.0.10:80 -> 10.200.2.2:8080"]


def test_graceful_deletes_an_idle_destination_at_once(kernel):
    applier, _ = graceful(kernel)
    applier.sync([web("10.200.1.2", "10.200.2.2")])
    assert applier.sync([web("10.200.1.2")]) == [
        "delete destination TCP 10.96.0.10:80 -> 10.200.2.2:8080"]


def test_a_draining_destination_wanted_again_gets_its_weight_back_and_a_fresh_clock(kernel):
    applier, clock = graceful(kernel, period=30)
    applier.sync([web("10.200.1.2", "10.200.2.2")])
    back = kernel.svc(6, VIP, 80)["dests"][("10.200.2.2", 8080)]
    back["active"] = 1
    applier.sync([web("10.200.1.2")])
    clock.now += 25

    assert applier.sync([web("10.200.1.2", "10.200.2.2")]) == [
        "set destination TCP 10.96.0.10:80 -> 10.200.2.2:8080 masq weight 1 (was masq weight 0)"]
    assert back["weight"] == 1
    # Removed again later: it drains for a whole new period, not the 5 s left of the old one.
    applier.sync([web("10.200.1.2")])
    clock.now += 10
    assert applier.sync([web("10.200.1.2")]) == []
    assert ("10.200.2.2", 8080) in kernel.svc(6, VIP, 80)["dests"]


def test_two_different_destinations_for_one_backend_are_refused_before_any_change(kernel):
    with pytest.raises(ValueError, match=r"TCP 10.96.0.10:80: two different destinations "
                                         r"10.200.1.2:8080"):
        IPVSApplier(in_service_cidr, ipvs=kernel).sync([
            web("10.200.1.2", address=VIP2),
            VirtualService("TCP", VIP, 80, destinations=(
                Destination("10.200.1.2", 8080), Destination("10.200.1.2", 8080, weight=2)))])
    assert kernel.services == {}


class FakeIpvsadm:
    """ipvsadm's timeout settings as state: `-L --timeout` shows them, `--set` changes them
    (0 keeps a value, as the kernel does)."""

    def __init__(self, tcp=900, tcpfin=120, udp=300):
        self.values = [tcp, tcpfin, udp]
        self.sets = 0

    def __call__(self, argv, input=None):
        from lowlevel.xtables import Completed
        if argv[1:] == ["-L", "--timeout"]:
            return Completed(argv, 0, "Timeout (tcp tcpfin udp): %d %d %d\n" % tuple(self.values), "")
        assert argv[1] == "--set"
        self.sets += 1
        self.values = [int(w) or c for w, c in zip(argv[2:], self.values)]
        return Completed(argv, 0, "", "")


def test_ipvs_timeouts_set_only_when_asked_and_different():
    from proxyd.kernel.ipvs import ensure_timeouts
    fake = FakeIpvsadm()
    assert ensure_timeouts(0, 0, 0, run=fake) is False and fake.sets == 0     # kernel defaults kept
    assert ensure_timeouts(3600, 0, 60, run=fake) is True
    assert fake.values == [3600, 120, 60]
    assert ensure_timeouts(3600, 0, 60, run=fake) is False and fake.sets == 1  # converged
