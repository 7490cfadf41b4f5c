"""Pod egress SNAT (``--enable-pod-egress``): pods reach the world outside the cluster.

Traffic from any pod CIDR of the cluster to an address that is neither a pod
CIDR nor a node is masqueraded to the node's address on the way out, as
kube-router does, with its set names (``kube-router-pod-subnets``,
``kube-router-node-ips``). Pod-to-pod and pod-to-node traffic keeps its source:
policies and services see the real pod address.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.state import SET_FAMILY, Chain, Hook, IPSet, save_quote



def set_name(base: str, family: int) -> str:
    return names.IPV6_SET_PREFIX + base if family == 6 else base


def build_egress(family: int, pod_cidrs: Iterable[str],
                 node_addresses: Iterable[str]) -> tuple[list[IPSet], Chain, Hook]:
    pods = set_name(names.POD_SUBNETS_SET, family)
    nodes = set_name(names.NODE_IPS_SET, family)
    sets = [IPSet(pods, "hash:net", SET_FAMILY[family],
                  frozenset(c for c in pod_cidrs if (":" in c) == (family == 6))),
            IPSet(nodes, "hash:ip", SET_FAMILY[family],
                  frozenset(a for a in node_addresses if (":" in a) == (family == 6)))]
    rule = (f"-m set --match-set {pods} src -m set ! --match-set {pods} dst "
            f"-m set ! --match-set {nodes} dst -m comment --comment "
            f"{save_quote('SNAT for pod egress')} -j MASQUERADE --random-fully")
    chain = Chain(names.POD_EGRESS_CHAIN, (rule,))
    hook = Hook("POSTROUTING", f"-m comment --comment {save_quote(names.POD_EGRESS_COMMENT)} "
                               f"-j {names.POD_EGRESS_CHAIN}")
    return sets, chain, hook


class PodEgress:
    def __init__(self, families: Iterable[int], *, ipsets: IPSetApplier | None = None,
                 tables: Mapping[int, TableApplier] | None = None):
        self.families = tuple(families)
        self.ipsets = ipsets or IPSetApplier(names.is_egress_set)
        self.tables = tables or {f: TableApplier(f, "nat", names.is_egress_chain)
                                 for f in self.families}

    def sync(self, pod_cidrs: Iterable[Iterable[str]],
             node_addresses: Iterable[Mapping[int, str]]) -> None:
        cidrs = sorted({c for per_node in pod_cidrs for c in per_node})
        addresses = sorted({a for per_node in node_addresses for a in per_node.values()})
        sets, chains = [], {}
        for family in self.families:
            family_sets, chain, hook = build_egress(family, cidrs, addresses)
            sets += family_sets
            chains[family] = (chain, hook)
        self.ipsets.sync_sets(sets)
        for family, (chain, hook) in chains.items():
            self.tables[family].apply([chain], [hook])


def cleanup(applier: PodEgress) -> list[str]:
    removed = [line for _, table in sorted(applier.tables.items()) for line in table.cleanup()]
    return removed + [f"ipset {name}" for name in applier.ipsets.cleanup_stale(())]
