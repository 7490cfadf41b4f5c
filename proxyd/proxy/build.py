"""What the service proxy wants in the kernel, from the node's ServicePorts (pure).

* IPVS: one virtual service per frontend (each ClusterIP, external or
  LoadBalancer IP, and the NodePort on the node's address -- on every local
  address with --nodeport-bindon-all-ip), masquerading to the usable
  endpoints of the same family.
* The ClusterIPs, external and LoadBalancer IPs live on kube-dummy-if, so the
  node accepts packets for them and IPVS sees them in INPUT.
* nat: IPVS-forwarded connections are SNATed to the node's address, so replies
  come back through the node that holds the connection -- except a pod's
  connection to a ClusterIP (its reply passes its own node anyway) and
  externalTrafficPolicy=Local frontends (the client's address is the point);
  --masquerade-all SNATs every one. Hairpin (a pod reaching itself through its
  own Service) is SNATed to the VIP.
* filter: with --ipvs-permit-all=false only serviced VIP:port pairs (and
  ping) are accepted on the VIPs; everything else sent to a VIP is rejected,
  so the node's own daemons are not reachable through Service addresses.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from proxyd.kernel import names
from proxyd.kernel.state import (SET_FAMILY, Chain, Destination, Hook, IPSet, VirtualService,
                                 save_quote)
from proxyd.proxy.model import ServicePort

_HOST = {4: 32, 6: 128}
_REJECT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
_PING = {4: "-p icmp -m icmp --icmp-type 8", 6: "-p ipv6-icmp -m icmp6 --icmpv6-type 128"}


@dataclass(frozen=True)
class NodeView:
    name: str
    addresses: dict[int, str]                     # family -> the node's address
    local_addresses: tuple[str, ...] = ()         # every address (--nodeport-bindon-all-ip)
    pod_cidrs: tuple[str, ...] = ()               # every node's pod CIDRs: the cluster's pods


@dataclass(frozen=True)
class ProxyFlags:
    families: tuple[int, ...] = (4,)
    service_cidrs: tuple = (ipaddress.ip_network("10.96.0.0/12"),)
    nodeport_bindon_all_ip: bool = False
    masquerade_all: bool = False
    ipvs_permit_all: bool = True


@dataclass
class FamilyRules:
    nat: list[Chain] = field(default_factory=list)
    nat_hooks: list[Hook] = field(default_factory=list)
    filter: list[Chain] = field(default_factory=list)
    filter_hooks: list[Hook] = field(default_factory=list)


@dataclass
class DesiredProxy:
    services: list[VirtualService] = field(default_factory=list)
    vips: list[str] = field(default_factory=list)
    sets: list[IPSet] = field(default_factory=list)
    families: dict[int, FamilyRules] = field(default_factory=dict)


def _family(address: str) -> int:
    return 6 if ":" in address else 4


@dataclass(frozen=True)
class Fragment:
    """What one Service adds to the node's proxy state; ``assemble`` joins them."""
    services: tuple[VirtualService, ...] = ()         # a later one wins a shared key
    vips: frozenset[str] = frozenset()
    members: frozenset[tuple[str, str]] = frozenset()  # (guard set, entry)
    hairpin: tuple[tuple[int, str], ...] = ()          # (family, SNAT chain rule), in order
    local: tuple[tuple[int, str], ...] = ()


def build_proxy(ports: Iterable[ServicePort], node: NodeView, flags: ProxyFlags) -> DesiredProxy:
    by_service: dict[str, list[ServicePort]] = {}
    for sp in ports:
        by_service.setdefault(sp.service, []).append(sp)
    return assemble([service_fragment(p, node, flags) for p in by_service.values()], node, flags)


def service_fragment(ports: list[ServicePort], node: NodeView, flags: ProxyFlags) -> Fragment:
    """One Service's ports as IPVS services, VIPs, guard-set entries and SNAT rules."""
    services: list[VirtualService] = []
    vips: set[str] = set()
    for sp in ports:
        for address, port, external in _frontends(sp, node, flags):
            family = _family(address)
            if family not in flags.families:
                continue
            dests = tuple(Destination(e.address, e.port) for e in sp.usable(node.name, external)
                          if _family(e.address) == family)
            services.append(VirtualService(sp.protocol, address, port, sp.scheduler,
                                           sp.affinity_seconds, frozenset(), dests))
        vips.update(ip for ip in sp.cluster_ips + sp.external_ips
                    if _family(ip) in flags.families)
    return Fragment(
        tuple(services), frozenset(vips),
        frozenset(m for f in flags.families for m in _guard_members(ports, f)),
        tuple((f, r) for f in flags.families for r in _hairpin_rules(ports, node, f)),
        tuple((f, r) for f in flags.families for r in _local_rules(ports, node, flags, f)))


def assemble(fragments: Iterable[Fragment], node: NodeView, flags: ProxyFlags) -> DesiredProxy:
    """The node's proxy state from its Services' fragments, in Service order."""
    services: dict[tuple, VirtualService] = {}
    vips: set[str] = set()
    members: set[tuple[str, str]] = set()
    hairpin: list[tuple[int, str]] = []
    local: list[tuple[int, str]] = []
    for f in fragments:
        services.update(((vs.protocol, vs.address, vs.port), vs) for vs in f.services)
        vips |= f.vips
        members |= f.members
        hairpin += f.hairpin
        local += f.local
    desired = DesiredProxy(services=[services[k] for k in sorted(services)],
                           vips=sort_vips(vips))
    for family in flags.families:
        desired.sets += family_sets(family, node, members)
        desired.families[family] = family_rules(
            family, [r for f, r in hairpin if f == family], [r for f, r in local if f == family],
            node, flags)
    return desired


def sort_vips(vips: Iterable[str]) -> list[str]:
    return sorted(vips, key=lambda a: (_family(a), ipaddress.ip_address(a)))


def _frontends(sp: ServicePort, node: NodeView, flags: ProxyFlags):
    for ip in sp.cluster_ips:
        yield ip, sp.port, False
    for ip in sp.external_ips:
        yield ip, sp.port, True
    if sp.node_port:
        addresses = (node.local_addresses if flags.nodeport_bindon_all_ip
                     else tuple(node.addresses.values()))
        for ip in addresses:
            yield ip, sp.node_port, True


def _set(base: str, family: int) -> str:
    return names.IPV6_SET_PREFIX + base if family == 6 else base


def pod_set(family: int, node: NodeView) -> IPSet:
    return IPSet(_set(names.SERVICE_POD_SUBNETS_SET, family), "hash:net", SET_FAMILY[family],
                 frozenset(c for c in node.pod_cidrs if _family(c) == family))


def guard_set_names(family: int) -> tuple[str, str]:
    return _set(names.SERVICE_VIPS_SET, family), _set(names.SERVICE_VIP_PORTS_SET, family)


def family_sets(family: int, node: NodeView, members: Iterable[tuple[str, str]]) -> list[IPSet]:
    """The pod-subnet set and the two guard sets of a family, the guards from ``members``."""
    svip, svip_port = guard_set_names(family)
    entries: dict[str, set[str]] = {svip: set(), svip_port: set()}
    for name, entry in members:
        if name in entries:
            entries[name].add(entry)
    return [pod_set(family, node),
            IPSet(svip, "hash:ip", SET_FAMILY[family], frozenset(entries[svip])),
            IPSet(svip_port, "hash:ip,port", SET_FAMILY[family], frozenset(entries[svip_port]))]


def snat_chain(family: int, hairpin: list[str], local: list[str], node: NodeView,
               flags: ProxyFlags) -> Chain:
    return Chain(names.SERVICE_SNAT_CHAIN,
                 tuple(hairpin + _snat_rules(local, node, flags, family)))


def family_rules(family: int, hairpin: list[str], local: list[str], node: NodeView,
                 flags: ProxyFlags) -> FamilyRules:
    rules = FamilyRules()
    rules.nat = [snat_chain(family, hairpin, local, node, flags)]
    rules.nat_hooks = [Hook("POSTROUTING", f"-m comment --comment "
                                           f"{save_quote(names.SERVICE_HOOK_COMMENT)} "
                                           f"-j {names.SERVICE_SNAT_CHAIN}")]
    rules.filter = [Chain(names.SERVICE_FILTER_CHAIN, tuple(_guard_rules(flags, family)))]
    rules.filter_hooks = [Hook("INPUT", f"-m comment --comment "
                                        f"{save_quote(names.SERVICE_HOOK_COMMENT)} "
                                        f"-j {names.SERVICE_FILTER_CHAIN}")]
    return rules


# xt_ipvs as iptables-save prints it: --ipvs is implied by (and dropped next to) any
# other option, and a host --vaddr has no /32 or /128.
def _hairpin_rules(ports: list[ServicePort], node: NodeView, family: int) -> list[str]:
    """A pod reaching itself through its Service: SNAT to the VIP, ahead of every RETURN."""
    out = []
    host = _HOST[family]
    for sp in ports:
        if not sp.hairpin:
            continue
        for vip in sp.cluster_ips + sp.external_ips:
            if _family(vip) != family:
                continue
            for ep in sp.usable(node.name, False):
                if ep.node == node.name and _family(ep.address) == family:
                    out.append(f"-s {ep.address}/{host} -d {ep.address}/{host} "
                               f"-p {sp.protocol.lower()} -m ipvs --vaddr {vip} "
                               f"--vport {sp.port} -m comment --comment "
                               f"{save_quote('hairpin ' + sp.service)} -j SNAT --to-source {vip}")
    return out


def _local_rules(ports: list[ServicePort], node: NodeView, flags: ProxyFlags,
                 family: int) -> list[str]:
    """externalTrafficPolicy=Local keeps the client's address (its endpoints are local)."""
    if flags.masquerade_all or not node.addresses.get(family):
        return []
    return [f"-m ipvs --vaddr {address} --vport {port} --vdir ORIGINAL "
            f"--vmethod MASQ -m comment --comment {save_quote('local ' + sp.service)} -j RETURN"
            for sp in ports if sp.local_external
            for address, port, external in _frontends(sp, node, flags)
            if external and _family(address) == family]


def _snat_rules(local: list[str], node: NodeView, flags: ProxyFlags, family: int) -> list[str]:
    node_ip = node.addresses.get(family)
    if not node_ip:
        return []
    out = []
    if not flags.masquerade_all:
        # A pod reaching a ClusterIP keeps its address: the reply comes back through
        # its own node, where IPVS holds the connection.
        pods = _set(names.SERVICE_POD_SUBNETS_SET, family)
        out += [f"-m set --match-set {pods} src -m ipvs --vaddr {net} --vdir ORIGINAL "
                f"--vmethod MASQ -m comment --comment {save_quote('pod to ClusterIP')} -j RETURN"
                for net in flags.service_cidrs if net.version == family]
    out += local
    # Everything else IPVS forwards (nodes, external clients, pods reaching a NodePort
    # served on another node) answers through this node.
    out.append("-m ipvs --vdir ORIGINAL --vmethod MASQ -m comment --comment "
               f"{save_quote('SNAT for IPVS-forwarded traffic')} -j SNAT --to-source {node_ip}")
    return out


def _guard_members(ports: list[ServicePort], family: int) -> Iterable[tuple[str, str]]:
    svip, svip_port = guard_set_names(family)
    for sp in ports:
        for ip in sp.cluster_ips + sp.external_ips:
            if _family(ip) == family:
                yield svip, ip
                yield svip_port, f"{ip},{sp.protocol.lower()}:{sp.port}"


def _guard_rules(flags: ProxyFlags, family: int) -> list[str]:
    svip, svip_port = guard_set_names(family)
    if flags.ipvs_permit_all:
        return [f"-m set --match-set {svip} dst -j ACCEPT"]
    return [f"-m set --match-set {svip_port} dst,dst -j ACCEPT",
            f"{_PING[family]} -m set --match-set {svip} dst -j ACCEPT",
            f"-m set --match-set {svip} dst -j REJECT --reject-with {_REJECT[family]}"]
