"""Routing intent: peers, adverts and the kernel routes for learned paths (pure)."""
import base64

import pytest

from proxyd.kernel import names
from proxyd.routing.model import (DEFAULT_ASN, LearnedPath, NodeError, RouterFlags, annotation_peers,
                                  bgp_node, build_bgp, build_routes)


def node(name, ip, cidr, asn=None, ipv6=None, cidr6=None, **annotations):
    ann = dict(annotations)
    if asn is not None:
        ann["kube-router.io/node.asn"] = str(asn)
    addresses = [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]
    if ipv6:
        addresses.append({"type": "InternalIP", "address": ipv6})
    return {"metadata": {"name": name, "annotations": ann},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr] + ([cidr6] if cidr6 else [])},
            "status": {"addresses": addresses}}


A = node("node-a", "172.30.0.10", "10.244.0.0/24")
B = node("node-b", "172.30.0.11", "10.244.1.0/24")
C = node("node-c", "192.168.7.5", "10.244.2.0/24")
OTHER_AS = node("node-d", "172.30.0.13", "10.244.3.0/24", asn=65001)


def nodes(*objs, cluster_asn=0):
    return [bgp_node(o, cluster_asn) for o in objs]


def test_full_mesh_ibgp_between_same_asn_and_pod_cidr_advert():
    me, *others = nodes(A, B, C, OTHER_AS)
    desired = build_bgp(me, [me] + others, RouterFlags())
    assert desired.asn == DEFAULT_ASN and desired.router_id == "172.30.0.10"
    assert [(p.address, p.asn, p.description) for p in desired.peers] == [
        ("172.30.0.11", 64512, "node node-b"), ("192.168.7.5", 64512, "node node-c")]
    assert [(a.prefix, a.nexthop) for a in desired.adverts] == [("10.244.0.0/24", "172.30.0.10")]


def test_cluster_asn_annotation_and_flags_switch_the_mesh_off():
    me, b = nodes(A, B, cluster_asn=65000)
    assert me.asn == 65000
    assert build_bgp(me, [b], RouterFlags(nodes_full_mesh=False)).peers == []
    assert build_bgp(me, [b], RouterFlags(enable_ibgp=False)).peers == []
    assert build_bgp(me, [b], RouterFlags(advertise_pod_cidr=False)).adverts == []


def test_global_peers_are_parallel_lists():
    me, = nodes(A)
    flags = RouterFlags(peer_router_ips=("192.0.2.1", "192.0.2.2"), peer_router_asns=(65100, 65200),
                        peer_router_ports=(179, 1790), peer_router_passwords=("s1", "s2"),
                        peer_router_multihop_ttl=3)
    peers = build_bgp(me, [], flags).peers
    assert [(p.address, p.asn, p.port, p.password, p.multihop_ttl) for p in peers] == [
        ("192.0.2.1", 65100, 179, "s1", 3), ("192.0.2.2", 65200, 1790, "s2", 3)]
    with pytest.raises(NodeError, match="2 peer IPs but 1 ASNs"):
        build_bgp(me, [], RouterFlags(peer_router_ips=("192.0.2.1", "192.0.2.2"),
                                      peer_router_asns=(65100,)))


def test_node_annotation_peers_with_base64_passwords():
    obj = node("node-a", "172.30.0.10", "10.244.0.0/24", **{
        "kube-router.io/peer.ips": "192.0.2.1,192.0.2.2", "kube-router.io/peer.asns": "65100,65101",
        "kube-router.io/peer.passwords": ",".join(base64.b64encode(p).decode() for p in (b"x", b"y"))})
    peers = annotation_peers(obj, 0)
    assert [(p.address, p.asn, p.password) for p in peers] == [("192.0.2.1", 65100, "x"),
                                                               ("192.0.2.2", 65101, "y")]
    obj["metadata"]["annotations"]["kube-router.io/peer.passwords"] = "!!notbase64"
    with pytest.raises(NodeError, match="peer"):
        annotation_peers(obj, 0)


@pytest.mark.parametrize("bad, match", [
    ({"metadata": {"name": "n"}, "status": {}}, "no InternalIP"),
    (node("n", "172.30.0.9", "10.244.9.0/24", asn="sixty"), "not a number"),
])
def test_unusable_nodes_say_why(bad, match):
    with pytest.raises(NodeError, match=match):
        bgp_node(bad, 0)


def test_ipv6_only_node_gets_a_stable_generated_router_id():
    v6 = {"metadata": {"name": "six"}, "spec": {"podCIDRs": ["fd00:244::/64"]},
          "status": {"addresses": [{"type": "InternalIP", "address": "fd00::10"}]}}
    me = bgp_node(v6, 0)
    one, two = build_bgp(me, [], RouterFlags(families=(6,))), build_bgp(me, [], RouterFlags(families=(6,)))
    assert one.router_id == two.router_id and one.router_id.count(".") == 3
    assert [(a.prefix, a.nexthop) for a in one.adverts] == [("fd00:244::/64", "fd00::10")]


def test_dual_stack_peers_and_adverts_per_family():
    a6 = node("node-a", "172.30.0.10", "10.244.0.0/24", ipv6="fd00::10", cidr6="fd00:244::/64")
    b6 = node("node-b", "172.30.0.11", "10.244.1.0/24", ipv6="fd00::11", cidr6="fd00:244:1::/64")
    me, b = nodes(a6, b6)
    desired = build_bgp(me, [b], RouterFlags(families=(4, 6)))
    assert [p.address for p in desired.peers] == ["172.30.0.11", "fd00::11"]
    assert [a.nexthop for a in desired.adverts] == ["172.30.0.10", "fd00::10"]


def test_routes_direct_on_the_shared_subnet_tunnel_otherwise():
    me, = nodes(A)
    learned = [LearnedPath("10.244.1.0/24", "172.30.0.11"), LearnedPath("10.244.2.0/24", "192.168.7.5"),
               LearnedPath("10.244.0.0/24", "172.30.0.10")]        # our own advert comes back
    tunnels, routes = build_routes(me, learned, ["172.30.0.0/24"], RouterFlags())
    tun = names.tunnel_name("192.168.7.5")
    assert [(t.name, t.remote, t.local) for t in tunnels] == [(tun, "192.168.7.5", "172.30.0.10")]
    assert [(r.prefix, r.gateway, r.device) for r in routes] == [
        ("10.244.1.0/24", "172.30.0.11", None), ("10.244.2.0/24", None, tun)]


def test_overlay_full_tunnels_everything_and_no_overlay_tunnels_nothing():
    me, = nodes(A)
    learned = [LearnedPath("10.244.1.0/24", "172.30.0.11"), LearnedPath("10.244.2.0/24", "192.168.7.5")]
    tunnels, routes = build_routes(me, learned, ["172.30.0.0/24"], RouterFlags(overlay_type="full"))
    assert len(tunnels) == 2 and all(r.device for r in routes)
    tunnels, routes = build_routes(me, learned, ["172.30.0.0/24"], RouterFlags(enable_overlay=False))
    assert tunnels == [] and [r.gateway for r in routes] == ["172.30.0.11", "192.168.7.5"]
