"""The proxy controller between full syncs: a change writes only what it touches.

The controller runs with its real appliers on stateful fakes of the kernel
(IPVS table, links and addresses, ipset, iptables); each test counts what
reached them.
"""
from __future__ import annotations

import pytest

from helpers.ipset import FakeIpset
from helpers.ipvs import FakeIPVS
from helpers.netlink_fakes import FakeLinks
from helpers.proxy_objects import NODE, READY, ProxyWorld, eps, service
from helpers.xtables import FakeXtables
from proxyd import cli
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.ipvs import IPVSApplier
from proxyd.kernel.vips import VIPApplier
from proxyd.proxy.controller import ServiceProxyController

class Lock:
    held = False

    def __enter__(self):
        self.held = True

    def __exit__(self, *exc):
        self.held = False


class Kernel:
    def __init__(self):
        self.ipvs, self.links, self.ipset = FakeIPVS(), FakeLinks(), FakeIpset()
        self.xt_lock = Lock()
        self.xt = FakeXtables(lock=self.xt_lock)

    def clear(self):
        for calls in (self.ipvs.calls, self.links.calls, self.ipset.calls, self.xt.calls):
            calls.clear()

    def writes(self):
        """Every call that changed something (dumps, saves and lists left out)."""
        return ([c for c in self.ipvs.calls if c[1] != "dump"]
                + [c for c in self.links.calls if c != "dump"]
                + [c[1] for c in self.ipset.calls if c[1] == "restore"]
                + [c for c in self.xt.calls if c.endswith("restore")])


def controller(kernel: Kernel, *flags) -> ServiceProxyController:
    config, _ = cli.parse_args(list(flags))
    ctl = ServiceProxyController(
        config, "node-a", vips=VIPApplier(ipr=kernel.links),
        ipsets=IPSetApplier(names.is_service_set, run=kernel.ipset),
        tables={(4, t): TableApplier(4, t, names.is_service_chain, run=kernel.xt,
                                     lock=kernel.xt_lock) for t in ("nat", "filter")},
        sysctl=lambda *a: None, addresses=lambda: ["172.30.0.10"], load_ipvs=lambda: None)
    ctl.ipvs = IPVSApplier(lambda *key: ctl.ownership.owns(*key), ipvs=kernel.ipvs)
    ctl._ensure_timeouts = lambda *a: False
    return ctl


@pytest.fixture
def synced():
    kernel, world = Kernel(), ProxyWorld()
    ctl = controller(kernel)
    world.sync(ctl, full=True)
    kernel.clear()
    return kernel, world, ctl


def test_one_endpoint_change_is_two_destination_calls_and_nothing_else(synced):
    kernel, world, ctl = synced
    moved = eps("s7", [("10.244.0.9", "node-a", READY), ("10.244.1.9", "node-b", READY)])

    world.sync(ctl, world.put("endpointslices", moved))

    assert kernel.ipvs.calls == [("dest", "add"), ("dest", "add")]    # ClusterIP and NodePort
    assert kernel.writes() == kernel.ipvs.calls
    assert {d for d in kernel.ipvs.svc(6, "10.96.1.7", 80)["dests"]} == {
        ("10.244.0.9", 8080), ("10.244.1.9", 8080)}


def test_a_new_and_a_deleted_service_write_their_vip_set_entries_and_ipvs(synced):
    kernel, world, ctl = synced
    new = service("fresh", cluster_ip="10.96.2.1", ports=[{"name": "http", "port": 80}])

    world.sync(ctl, world.put("services", new),
               world.put("services", None, key="x/s3"))

    assert [c for c in kernel.writes() if isinstance(c, tuple)] == [   # in key order
        ("service", "del"), ("service", "add"), ("service", "del")]
    assert [c for c in kernel.writes() if isinstance(c, str)] == [
        "add 10.96.2.1", "del 10.96.1.3", "restore"]
    assert "10.96.2.1" in kernel.ipset.entries("kube-router-svip")
    assert "10.96.1.3" not in kernel.ipset.entries("kube-router-svip")


def test_a_heartbeat_wakes_nothing_and_a_full_resync_after_changes_writes_nothing(synced):
    kernel, world, ctl = synced
    beat = {**NODE, "status": {**NODE["status"], "conditions": [{"type": "Ready"}]}}
    assert not ctl.relevant("nodes", NODE, beat)
    svc = world.stores["services"].get("x/s1")
    assert not ctl.relevant("services", svc, {**svc, "metadata": {
        **svc["metadata"], "resourceVersion": "9", "managedFields": [{}]}})
    assert ctl.relevant("services", svc, {**svc, "spec": {**svc["spec"], "type": "ClusterIP"}})

    world.sync(ctl, world.put("endpointslices", eps("s2", [("10.244.0.30", "node-a", READY)])))
    kernel.clear()
    world.sync(ctl, full=True)
    assert kernel.writes() == []


def test_a_restarted_daemon_applies_zero_changes(synced):
    kernel, world, _ = synced
    world.sync(controller(kernel), full=True)
    assert kernel.writes() == []


def test_drift_is_repaired_by_the_full_resync_and_by_nothing_else(synced):
    kernel, world, ctl = synced
    del kernel.ipvs.svc(6, "10.96.1.5", 80)["dests"][("10.244.0.7", 8080)]   # by hand

    world.sync(ctl, world.put("endpointslices", eps("s6", [("10.244.0.40", "node-a", READY)])))
    world.sync(ctl)
    assert ("10.244.0.7", 8080) not in kernel.ipvs.svc(6, "10.96.1.5", 80)["dests"]

    world.sync(ctl, full=True)
    assert ("10.244.0.7", 8080) in kernel.ipvs.svc(6, "10.96.1.5", 80)["dests"]


def test_a_failed_write_makes_the_next_sync_a_reading_one(synced):
    kernel, world, ctl = synced

    def s4(**annotations):
        return service("s4", cluster_ip="10.96.1.4", type_="NodePort", annotations=annotations,
                       ports=[{"name": "http", "port": 80, "nodePort": 30004}])
    # a scheduler this kernel has no module for
    with pytest.raises(Exception, match="lblc"):
        world.sync(ctl, world.put("services", s4(**{"kube-router.io/service.scheduler": "lblc"})))
    assert ctl.state is None
    kernel.clear()
    world.sync(ctl, world.put("services", s4(**{"kube-router.io/service.scheduler": "sh"})))
    assert ("service", "dump") in kernel.ipvs.calls          # no state: a full, reading sync
    assert kernel.ipvs.svc(6, "10.96.1.4", 80)["sched_name"] == "sh"
