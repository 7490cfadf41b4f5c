"""Node objects + flags -> this node's BGP intent and the kernel routes for what it learned (pure).

kube-router's rules:
  * a node's address is its InternalIP (else ExternalIP), one per family;
  * its ASN is the ``kube-router.io/node.asn`` annotation, else --cluster-asn,
    else 64512; with --enable-ibgp and --nodes-full-mesh every node peers
    with every other node of the same ASN (iBGP full mesh);
  * --peer-router-ips/-asns/-ports/-passwords are peers of every node; the
    ``kube-router.io/peer.ips/.asns/.ports/.passwords`` annotations add
    peers for one node (passwords base64-encoded);
  * the node advertises its pod CIDRs (--advertise-pod-cidr) with its own
    address as next hop;
  * a learned prefix is routed via its next hop when that is on a directly
    connected subnet; otherwise, with --enable-overlay, through an ipip tunnel
    to the next hop; --overlay-type=full tunnels every learned prefix.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lowlevel.apiobjects import (cluster_ips, external_ips, loadbalancer_ips, node_addresses,
                                 pod_cidrs)
from proxyd.kernel import names
from proxyd.kernel.state import Route, Tunnel

DEFAULT_ASN = 64512
ASN_ANNOTATION = "kube-router.io/node.asn"
PEER_ANNOTATIONS = ("kube-router.io/peer.ips", "kube-router.io/peer.asns",
                    "kube-router.io/peer.ports", "kube-router.io/peer.passwords")
class NodeError(ValueError):
    """A Node object this node cannot use (no address, a bad annotation)."""


@dataclass(frozen=True)
class BgpNode:
    name: str
    addresses: Mapping[int, str]        # family -> address
    asn: int
    pod_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class PeerSpec:
    address: str
    asn: int
    port: int = 179
    password: str = ""
    multihop_ttl: int = 0
    description: str = ""               # "node node-b", "--peer-router-ips", "annotation"


@dataclass(frozen=True)
class Advert:
    prefix: str
    nexthop: str


@dataclass
class DesiredBgp:
    asn: int
    router_id: str
    peers: list[PeerSpec] = field(default_factory=list)
    adverts: list[Advert] = field(default_factory=list)


@dataclass(frozen=True)
class LearnedPath:
    prefix: str
    nexthop: str


def bgp_node(obj: Mapping, cluster_asn: int) -> BgpNode:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    addresses = node_addresses(obj)
    if not addresses:
        raise NodeError(f"node {name} has no InternalIP or ExternalIP")
    text = ((meta.get("annotations") or {}).get(ASN_ANNOTATION) or "").strip()
    try:
        asn = int(text) if text else (cluster_asn or DEFAULT_ASN)
    except ValueError:
        raise NodeError(f"node {name}: {ASN_ANNOTATION}={text!r} is not a number") from None
    if not 0 < asn < 1 << 32:
        raise NodeError(f"node {name}: ASN {asn} out of range")
    return BgpNode(name, addresses, asn, pod_cidrs(obj)[0])


@dataclass(frozen=True)
class RouterFlags:
    """The flags the routing intent depends on (a slice of Config, so tests stay small)."""
    cluster_asn: int = 0
    router_id: str = ""
    enable_ibgp: bool = True
    nodes_full_mesh: bool = True
    advertise_pod_cidr: bool = True
    peer_router_ips: tuple[str, ...] = ()
    peer_router_asns: tuple[int, ...] = ()
    peer_router_ports: tuple[int, ...] = ()
    peer_router_passwords: tuple[str, ...] = ()
    peer_router_multihop_ttl: int = 0
    bgp_port: int = 179
    families: tuple[int, ...] = (4,)
    advertise_cluster_ip: bool = False
    advertise_external_ip: bool = False
    advertise_loadbalancer_ip: bool = False
    enable_overlay: bool = True
    overlay_type: str = "subnet"


ADVERTISE_ANNOTATIONS = {"cluster": "kube-router.io/service.advertise.clusterip",
                         "external": "kube-router.io/service.advertise.externalip",
                         "loadbalancer": "kube-router.io/service.advertise.loadbalancerip"}


@dataclass(frozen=True)
class ServiceVIPs:
    """One Service's addresses and whether this node may attract their traffic."""
    cluster: tuple[str, ...]
    external: tuple[str, ...]
    loadbalancer: tuple[str, ...]
    annotations: Mapping[str, str]
    local_internal: bool = False          # internalTrafficPolicy=Local
    local_external: bool = False          # externalTrafficPolicy=Local
    has_local_endpoint: bool = True


def service_vips(svc: Mapping, local_endpoint: bool) -> ServiceVIPs:
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    return ServiceVIPs(cluster_ips(svc), external_ips(svc), loadbalancer_ips(svc),
                       dict(meta.get("annotations") or {}),
                       spec.get("internalTrafficPolicy") == "Local",
                       spec.get("externalTrafficPolicy") == "Local", local_endpoint)


def vip_adverts(services: Iterable[ServiceVIPs], me: BgpNode, flags: "RouterFlags") -> list[Advert]:
    """kube-router's --advertise-cluster-ip/-external-ip/-loadbalancer-ip, each overridable per
    Service by its kube-router.io/service.advertise.* annotation ("true"/"false"); a Local
    traffic policy advertises only from nodes with a ready endpoint of the Service."""
    out = []
    for svc in services:
        for kind, addresses, default, local in (
                ("cluster", svc.cluster, flags.advertise_cluster_ip, svc.local_internal),
                ("external", svc.external, flags.advertise_external_ip, svc.local_external),
                ("loadbalancer", svc.loadbalancer, flags.advertise_loadbalancer_ip,
                 svc.local_external)):
            said = (svc.annotations.get(ADVERTISE_ANNOTATIONS[kind]) or "").strip().lower()
            if not (said == "true" if said in ("true", "false") else default):
                continue
            if local and not svc.has_local_endpoint:
                continue
            for ip in addresses:
                family = ipaddress.ip_address(ip).version
                if family in flags.families and family in me.addresses:
                    out.append(Advert(f"{ip}/{32 if family == 4 else 128}", me.addresses[family]))
    return sorted(set(out), key=lambda a: (a.prefix, a.nexthop))


def build_bgp(me: BgpNode, others: Iterable[BgpNode], flags: RouterFlags) -> DesiredBgp:
    router_id = flags.router_id or me.addresses.get(4) or "generate"
    if router_id == "generate":
        # An IPv6-only node still needs a 32-bit BGP identifier: derive a stable one.
        seed = (me.addresses.get(6) or me.name).encode()
        router_id = str(ipaddress.IPv4Address(hashlib.sha256(seed).digest()[:4]))
    desired = DesiredBgp(me.asn, router_id)
    if flags.enable_ibgp and flags.nodes_full_mesh:
        for other in sorted(others, key=lambda n: n.name):
            if other.name == me.name or other.asn != me.asn:
                continue
            for family in flags.families:
                if family in other.addresses and family in me.addresses:
                    desired.peers.append(PeerSpec(other.addresses[family], other.asn,
                                                  flags.bgp_port, description=f"node {other.name}"))
    desired.peers += external_peers(flags.peer_router_ips, flags.peer_router_asns,
                                    flags.peer_router_ports, flags.peer_router_passwords,
                                    flags.peer_router_multihop_ttl, "--peer-router-ips")
    if flags.advertise_pod_cidr:
        for cidr in me.pod_cidrs:
            family = ipaddress.ip_network(cidr, strict=False).version
            if family in flags.families and family in me.addresses:
                desired.adverts.append(Advert(cidr, me.addresses[family]))
    return desired


def external_peers(ips, asns, ports, passwords, multihop_ttl: int, source: str) -> list[PeerSpec]:
    """kube-router's parallel lists: one ASN per IP; ports and passwords optional, else
    one per IP."""
    ips = [str(ip) for ip in ips]
    if len(asns) != len(ips):
        raise NodeError(f"{source}: {len(ips)} peer IPs but {len(asns)} ASNs (one per IP)")
    for what, values in (("ports", ports), ("passwords", passwords)):
        if values and len(values) != len(ips):
            raise NodeError(f"{source}: {len(ips)} peer IPs but {len(values)} {what}")
    return [PeerSpec(ip, int(asns[i]), int(ports[i]) if ports else 179,
                     passwords[i] if passwords else "", multihop_ttl, source)
            for i, ip in enumerate(ips)]


def annotation_peers(obj: Mapping, multihop_ttl: int) -> list[PeerSpec]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    ips, asns, ports, passwords = (
        [v.strip() for v in (annotations.get(key) or "").split(",") if v.strip()]
        for key in PEER_ANNOTATIONS)
    if not ips:
        return []
    try:
        decoded = [base64.b64decode(p, validate=True).decode() for p in passwords]
        return external_peers(ips, [int(a) for a in asns], [int(p) for p in ports], decoded,
                              multihop_ttl, "node annotations kube-router.io/peer.*")
    except (ValueError, UnicodeDecodeError) as e:
        raise NodeError(f"node {(obj.get('metadata') or {}).get('name')}: bad "
                        f"kube-router.io/peer.* annotation: {e}") from None


def build_routes(me: BgpNode, learned: Iterable[LearnedPath], connected: Iterable[str],
                 flags: RouterFlags, advertised: Iterable[str] = ()) -> tuple[list[Tunnel], list[Route]]:
    """Kernel state for the best paths learned from peers.

    ``connected``: the node's directly connected subnets ("172.30.0.0/24", ...).
    Prefixes this node advertises itself (its pod CIDRs, Service VIPs it holds) are
    never routed elsewhere.
    """
    subnets = [ipaddress.ip_network(c, strict=False) for c in connected]
    own = set(me.pod_cidrs) | set(advertised)
    tunnels: dict[str, Tunnel] = {}
    routes = []
    for path in sorted(learned, key=lambda p: (p.prefix, p.nexthop)):
        hop = ipaddress.ip_address(path.nexthop)
        if path.prefix in own or path.nexthop in me.addresses.values():
            continue
        direct = any(hop in net for net in subnets if net.version == hop.version)
        local = me.addresses.get(hop.version)
        if local and flags.enable_overlay and (flags.overlay_type == "full" or not direct):
            name = names.tunnel_name(path.nexthop)
            tunnels[name] = Tunnel(name, path.nexthop, local)
            routes.append(Route(path.prefix, None, name))
        else:
            routes.append(Route(path.prefix, path.nexthop, None))
    return sorted(tunnels.values(), key=lambda t: t.name), routes
