"""The firewall controller's change-by-change syncs against the real iptables and ipset.

A sync that is not full writes only what its changes touched and reads nothing
(no iptables-save, no ipset save); what it leaves is exactly what a full sync
wants (the next full sync writes nothing); drift made by hand is repaired by
the full resync and by nothing else; a restarted controller writes nothing.
Packets show the firewall following a pod's new labels.
"""
from __future__ import annotations

from helpers.netpol_objects import namespace, pod, policy
from proxyd import cli
from proxyd.daemon import SyncContext
from proxyd.k8s.cache import Store, object_key
from proxyd.k8s.tracker import Change
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.netpol.controller import NetworkPolicyController
from lowlevel.xtables import run_command

from test_netpol_kernel import _connects, _routed_pod

POLICY = policy("x", "web", {"matchLabels": {"app": "web"}}, ingress=[
    {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 8080}]},
    {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 9000}]}])


class CountingRun:
    """The real command runner, counting what each sync executed."""

    def __init__(self):
        self.argv: list[str] = []

    def __call__(self, argv, input=None, **kw):
        self.argv.append(argv[0] + (" " + argv[1] if argv[0] == "ipset" else ""))
        return run_command(argv, input, **kw)

    def take(self) -> list[str]:
        taken, self.argv = self.argv, []
        return taken


def controller(run):
    config, _ = cli.parse_args(["--run-firewall=true", "--hostname-override=node-a"])
    return NetworkPolicyController(
        config, "node-a", ipsets=IPSetApplier(names.is_netpol_set, run=run),
        tables={4: TableApplier(4, "filter", names.is_netpol_chain, run=run)},
        ensure_bridge_netfilter=lambda families: None)


class World:
    def __init__(self):
        self.stores = {"pods": Store(), "namespaces": Store(), "networkpolicies": Store()}
        self.pending: list[Change] = []
        self.version = 0

    def put(self, kind, obj, deleted=False):
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        change = self.stores[kind].apply(obj, deleted)
        self.pending.append(Change(kind, object_key(obj), *change))

    def sync(self, ctl, full=False):
        changes, self.pending = self.pending, []
        ctl.sync(SyncContext(self.stores, changes, full))


def seeded_world() -> World:
    """A web pod on this node isolated by POLICY, whose client pod is on another node."""
    world = World()
    world.put("namespaces", namespace("x"))
    world.put("pods", pod("x", "a", "10.244.0.2", labels={"app": "web"}))
    world.put("pods", pod("x", "c", "10.244.0.9", node="node-b", labels={"role": "client"}))
    world.put("networkpolicies", POLICY)
    return world


def test_changes_write_only_their_delta_and_packets_follow(netns_factory):
    client, node, pod_ns = _routed_pod(netns_factory)
    world, run = seeded_world(), CountingRun()
    ctl = controller(run)
    node.call(lambda: world.sync(ctl, full=True))
    assert "iptables-save" in run.take()
    assert not _connects(client, pod_ns, 8080)         # 192.0.2.2 is no client pod
    assert _connects(client, pod_ns, 9000)             # the ipBlock's port
    # another node's pod takes the client's address and label: one set entry, no chain
    world.put("pods", pod("x", "c", "192.0.2.2", node="node-b", labels={"role": "client"}))
    node.call(lambda: world.sync(ctl))
    assert run.take() == ["ipset restore"]
    assert not any(ctl.last_delta.chains.values()) and len(ctl.last_delta.sets) == 1
    assert _connects(client, pod_ns, 8080)
    # the target loses its label: its chains and the policy's go, the set last
    world.put("pods", pod("x", "a", "10.244.0.2", labels={"app": "other"}))
    node.call(lambda: world.sync(ctl))
    assert run.take() == ["iptables-restore", "ipset restore"]
    assert _connects(client, pod_ns, 8081)             # no longer isolated
    # a change the firewall does not read: nothing written at all
    world.put("pods", {**pod("x", "a", "10.244.0.2", labels={"app": "other"}),
                       "status": {"phase": "Running", "podIP": "10.244.0.2",
                                  "podIPs": [{"ip": "10.244.0.2"}], "startTime": "now"}})
    node.call(lambda: world.sync(ctl))
    assert run.take() == []
    # what the changes left is exactly what a full sync wants
    world.put("pods", pod("x", "a", "10.244.0.2", labels={"app": "web"}))
    node.call(lambda: world.sync(ctl))
    assert "iptables-save" not in run.take()
    assert not _connects(client, pod_ns, 8082)
    node.call(lambda: world.sync(ctl, full=True))
    assert ctl.tables[4].last_rewritten == [] and _restore_lines(run.take()) == 0


def _restore_lines(argv):
    return sum(1 for a in argv if a in ("iptables-restore", "ipset restore"))


def test_drift_is_repaired_by_the_full_resync_only_and_a_restart_writes_nothing(netns_factory):
    node = netns_factory("fwnode")
    world, run = seeded_world(), CountingRun()
    ctl = controller(run)
    node.call(lambda: world.sync(ctl, full=True))
    pod_chain = names.pod_chain("x", "a", "ingress")
    good_rules = node.exec(f"iptables -S {pod_chain}").stdout
    good_sets = node.exec("ipset save").stdout
    (peer_set,) = [line.split()[1] for line in good_sets.splitlines()
                   if line.startswith("add ") and "10.244.0.9" in line]
    run.take()
    node.sh(f"iptables -F {pod_chain} && ipset del {peer_set} 10.244.0.9")
    # a change elsewhere is synced without reading: the drift stays
    world.put("pods", pod("x", "d", "10.244.0.7", node="node-b", labels={"role": "client"}))
    node.call(lambda: world.sync(ctl))
    assert run.take() == ["ipset restore"]
    assert node.exec(f"iptables -S {pod_chain}").stdout == f"-N {pod_chain}\n"
    # the full resync reads the kernel once and puts back exactly what was lost
    node.call(lambda: world.sync(ctl, full=True))
    assert ctl.tables[4].last_rewritten == [pod_chain]
    assert node.exec(f"iptables -S {pod_chain}").stdout == good_rules
    assert "10.244.0.9" in node.exec(f"ipset list {peer_set}").stdout
    run.take()
    node.call(lambda: world.sync(ctl, full=True))      # nothing drifted: nothing written
    assert _restore_lines(run.take()) == 0
    restarted = controller(run)
    node.call(lambda: world.sync(restarted, full=True))
    assert _restore_lines(run.take()) == 0
