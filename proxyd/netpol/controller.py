"""The network policy firewall controller (``--run-firewall``).

The node's desired firewall lives in a ``FirewallState`` (state.py), kept
current change by change. A full sync (the first, every --iptables-sync-period,
and the retry after any failure) loads it from the caches and hands the whole
of it to the appliers, which read the kernel and repair whatever differs. Every
other sync feeds the tracker's changes to the state and writes only what they
touched, without reading the kernel: set entries first (``ipset restore``
add/del lines), then the changed chains (one ``iptables-restore --noflush`` per
family), then the sets nobody references any more. A packet never meets a
rule whose sets are not yet filled, and a pod chain is dropped only after no
jump leads to it.
"""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Callable

from lowlevel import sysctl
from proxyd.config import Config
from proxyd.problems import ProblemLog
from proxyd.runner import MIN_SYNC_INTERVAL
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.netpol.build import NodeRanges
from proxyd.netpol.model import namespace_labels, pod_from
from proxyd.netpol.state import Delta, FirewallState, same_pod

log = logging.getLogger(__name__)

BRIDGE_NF = {4: "net/bridge/bridge-nf-call-iptables", 6: "net/bridge/bridge-nf-call-ip6tables"}

def ranges_of(config: Config) -> NodeRanges:
    return NodeRanges(tuple(config.service_cluster_ip_range),
                      tuple(config.service_external_ip_range),
                      tuple(config.service_node_port_range))


class NetworkPolicyController:
    name = "firewall"
    kinds = ("pods", "namespaces", "networkpolicies")

    def __init__(self, config: Config, node_name: str, *, ipsets: IPSetApplier | None = None,
                 tables: dict[int, TableApplier] | None = None,
                 ensure_bridge_netfilter: Callable[[tuple[int, ...]], None] | None = None):
        self.node_name = node_name
        self.families = config.families()
        self.ranges = ranges_of(config)
        self.sync_period = config.iptables_sync_period.total_seconds()
        self.min_sync_interval = min(MIN_SYNC_INTERVAL, self.sync_period)
        self.ipsets = ipsets or IPSetApplier(names.is_netpol_set)
        self.tables = tables or {f: TableApplier(f, "filter", names.is_netpol_chain)
                                 for f in self.families}
        self._bridge_nf = ensure_bridge_netfilter or ensure_bridge_netfilter_calls
        self.problems = ProblemLog(log, "network policy skipped (every other policy still applies)")
        self.state: FirewallState | None = None
        self.last_delta = Delta()

    @staticmethod
    def relevant(kind: str, old: dict | None, new: dict | None) -> bool:
        """Whether a change moves anything the firewall reads (a pod's status heartbeat,
        an annotation, a restart count: no)."""
        if old is None or new is None:
            return True
        if kind == "pods":
            a, b = pod_from(old), pod_from(new)
            return (a is None) != (b is None) or (a is not None and not same_pod(a, b))
        if kind == "namespaces":
            return namespace_labels([old]) != namespace_labels([new])
        return (old.get("spec"), old.get("metadata", {}).get("name")) != (
            new.get("spec"), new.get("metadata", {}).get("name"))

    def sync(self, ctx) -> None:
        state, self.state = self.state, None        # until this sync succeeds
        if ctx.full or state is None or not self._appliers_ready():
            self._full_sync(ctx.stores)
            return
        delta = state.update(ctx.changes)
        self.problems.report(state.problem_list())
        if delta:
            self.ipsets.apply_changes([s for s in delta.sets.values() if s is not None])
            for family, chains in delta.chains.items():
                if chains:
                    self.tables[family].apply_changes(chains)
            self.ipsets.destroy([name for name, s in delta.sets.items() if s is None])
        self.last_delta, self.state = delta, state

    def _appliers_ready(self) -> bool:
        return self.ipsets.has_applied and all(t.has_applied for t in self.tables.values())

    def _full_sync(self, stores) -> None:
        """Everything from the caches; the appliers read the kernel and repair it."""
        state = FirewallState(self.node_name, self.families, self.ranges)
        state.load(stores["pods"].list(), stores["namespaces"].list(),
                   stores["networkpolicies"].list())
        self.problems.report(state.problem_list())
        desired = state.desired()
        state.take_delta()
        self._bridge_nf(self.families)
        self.ipsets.sync_sets(desired.sets)
        for family, wanted in desired.families.items():
            self.tables[family].apply(wanted.chains, wanted.hooks)
        self.ipsets.cleanup_stale(desired.set_names())
        self.last_delta, self.state = Delta(), state


def ensure_bridge_netfilter_calls(families: tuple[int, ...]) -> None:
    """Pods on one node talk across the CNI bridge: without br_netfilter and
    bridge-nf-call-ip(6)tables=1 that traffic never meets the FORWARD chain, and
    policies would hold only between nodes."""
    if not os.path.exists(f"{sysctl.ROOT}/{BRIDGE_NF[4]}"):
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for family in families:
        try:
            sysctl.ensure_sysctl(BRIDGE_NF[family], "1")
        except OSError as e:
            log.warning("cannot enable %s (%s): policies will not hold between pods on "
                        "the same node", BRIDGE_NF[family], e)


def cleanup_firewall(config: Config | None = None, *, ipsets: IPSetApplier | None = None,
                     tables: dict[int, TableApplier] | None = None) -> list[str]:
    """Remove the firewall's hooks, chains and sets in both families; what was removed."""
    tables = tables or {f: TableApplier(f, "filter", names.is_netpol_chain) for f in (4, 6)}
    removed = [line for _, table in sorted(tables.items()) for line in table.cleanup()]
    ipsets = ipsets or IPSetApplier(names.is_netpol_set)
    removed += [f"ipset {name}" for name in ipsets.cleanup_stale(())]
    return removed
