"""The network policy firewall controller (``--run-firewall``).

Each sync rebuilds the node's whole desired firewall from the caches (pure:
model.py, build.py) and hands it to the kernel appliers, which change only
what differs: sets first (new and changed, swapped in atomically), then one
iptables-restore per family, then stale sets nobody references any more.
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
from proxyd.netpol.build import NodeRanges, build_firewall
from proxyd.netpol.model import build_node_firewall

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

    def sync(self, ctx) -> None:
        stores = ctx.stores
        model = build_node_firewall(self.node_name, stores["pods"].list(),
                                    stores["namespaces"].list(), stores["networkpolicies"].list())
        self.problems.report(model.problems)
        desired = build_firewall(model, self.families, self.ranges)
        self._bridge_nf(self.families)
        self.ipsets.sync_sets(desired.sets)
        for family, wanted in desired.families.items():
            self.tables[family].apply(wanted.chains, wanted.hooks)
        self.ipsets.cleanup_stale(desired.set_names())


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
