"""The route applier's ipip / ip6ip6 tunnels carrying pod traffic between nodes in
different subnets.

Node A and node B sit in different underlay subnets joined by a router
namespace that has no route to any pod CIDR, so pod-to-pod packets can only
cross it encapsulated. Each node's applier creates ``tun-…`` tunnels and
``<pod cidr> via <remote node> dev tun-… onlink`` routes; a real TCP exchange
between pods behind A and B flows through them.
"""
from __future__ import annotations

import json

import pytest

from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange
from proxyd.kernel import names
from proxyd.kernel.routes import Route, RouteApplier, RouteSyncError, Tunnel

pyroute2 = pytest.importorskip("pyroute2")

# Per family: node A's and B's underlay addresses, the router's side of each, the pods.
PLAN = {
    4: dict(a="10.251.1.2", ra="10.251.1.1", b="10.251.2.2", rb="10.251.2.1", plen=24,
            pod_a="10.244.1.2", gw_a="10.244.1.1", cidr_a="10.244.1.0/24",
            pod_b="10.244.2.2", gw_b="10.244.2.1", cidr_b="10.244.2.0/24", mtu=1480,
            ip="ip"),
    6: dict(a="fd00:251:1::2", ra="fd00:251:1::1", b="fd00:251:2::2", rb="fd00:251:2::1",
            plen=64, pod_a="fd00:244:1::2", gw_a="fd00:244:1::1", cidr_a="fd00:244:1::/64",
            pod_b="fd00:244:2::2", gw_b="fd00:244:2::1", cidr_b="fd00:244:2::/64", mtu=1460,
            ip="ip -6"),
}


def _addr(dev, addr, plen):
    return f"ip addr add {addr}/{plen} dev {dev}" + (" nodad" if ":" in addr else "")


FORWARDING = ["sysctl -qw net.ipv4.ip_forward=1", "sysctl -qw net.ipv6.conf.all.forwarding=1"]


@pytest.fixture
def overlay(netns_factory):
    a, r, b = netns_factory("ov-a"), netns_factory("ov-r"), netns_factory("ov-b")
    pod_a, pod_b = netns_factory("ov-pa"), netns_factory("ov-pb")
    veth_pair(a, "eth0", r, "ea")
    veth_pair(r, "eb", b, "eth0")
    veth_pair(a, "pod0", pod_a, "eth0")
    veth_pair(b, "pod0", pod_b, "eth0")
    # One shell per namespace: every exec costs ~0.2 s inside the VM.
    script = {a: list(FORWARDING), r: list(FORWARDING), b: list(FORWARDING), pod_a: [],
              pod_b: []}
    for p in PLAN.values():
        script[r] += [_addr("ea", p["ra"], p["plen"]), _addr("eb", p["rb"], p["plen"])]
        for node, pod, me, peer, via, gw, addr in (
                (a, pod_a, p["a"], p["b"], p["ra"], p["gw_a"], p["pod_a"]),
                (b, pod_b, p["b"], p["a"], p["rb"], p["gw_b"], p["pod_b"])):
            script[node] += [_addr("eth0", me, p["plen"]), f"{p['ip']} route add {peer} via {via}",
                             _addr("pod0", gw, p["plen"])]
            script[pod] += [_addr("eth0", addr, p["plen"]),
                            f"{p['ip']} route add default via {gw}"]
    for ns, lines in script.items():
        ns.sh("\n".join(lines))
    appliers = []
    try:
        for ns in (a, b):
            appliers.append(RouteApplier(ipr=pyroute2.IPRoute(netns=ns.name)))
        yield dict(a=a, r=r, b=b, pod_a=pod_a, pod_b=pod_b, apply_a=appliers[0],
                   apply_b=appliers[1])
    finally:
        for applier in appliers:
            applier.close()


def _desired(me: str, peer: str):
    """One node's tunnels and routes towards the other, for both families.

    IPv4 goes ``via <remote node> onlink`` as kube-router does; IPv6 refuses an
    onlink gateway its table routes through another device (the underlay), so
    the IPv6 route names only the tunnel."""
    tunnels, routes = [], []
    for version, p in PLAN.items():
        name = names.tunnel_name(p[peer])
        tunnels.append(Tunnel(name, p[peer], p[me], mtu=p["mtu"]))
        routes.append(Route(p["cidr_" + peer], p[peer], name, onlink=True) if version == 4
                      else Route(p["cidr_" + peer], None, name))
    return tunnels, routes


def _link(ns, name):
    out = ns.exec(f"ip -d -j link show dev {name}", check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def _tx_packets(ns, name):
    [link] = json.loads(ns.exec(f"ip -j -s link show dev {name}").stdout)
    return link["stats64"]["tx"]["packets"]


def test_pod_traffic_crosses_ipip_and_ip6ip6_tunnels(overlay):
    o = overlay
    for p in PLAN.values():  # the router cannot carry pod packets by itself
        assert o["r"].exec(f"{p['ip']} route get {p['pod_b']}", check=False).returncode != 0
        with pytest.raises(OSError):
            tcp_exchange(o["pod_a"], o["pod_b"], p["pod_b"])

    for me, peer in (("a", "b"), ("b", "a")):
        tunnels, routes = _desired(me, peer)
        applier = o["apply_" + me]
        assert applier.sync_tunnels(tunnels) == sorted(t.name for t in tunnels)
        assert applier.sync_routes(routes) == sorted(r.prefix for r in routes)
        assert applier.sync_tunnels(tunnels) == [] and applier.sync_routes(routes) == []

    for version, p in PLAN.items():
        tun = names.tunnel_name(p["b"])
        link = _link(o["a"], tun)
        data = link["linkinfo"]["info_data"]
        assert link["linkinfo"]["info_kind"] == ("ipip" if version == 4 else "ip6tnl")
        assert (data["local"], data["remote"], link["mtu"]) == (p["a"], p["b"], p["mtu"])
        assert "UP" in link["flags"]
        before = _tx_packets(o["a"], tun)
        # The pod's own address arrives: the packets were carried, not translated.
        assert tcp_exchange(o["pod_a"], o["pod_b"], p["pod_b"]) == p["pod_a"]
        assert _tx_packets(o["a"], tun) - before >= 3

    # Without desired tunnels they are deleted, and their routes with them.
    tunnels, routes = _desired("a", "b")
    assert o["apply_a"].sync_tunnels([]) == sorted(t.name for t in tunnels)
    assert all(_link(o["a"], t.name) is None for t in tunnels)
    with pytest.raises(RouteSyncError, match="does not exist"):
        o["apply_a"].sync_routes(routes)
    assert o["apply_a"].sync_routes([]) == []
    for p in PLAN.values():
        assert json.loads(o["a"].exec(f"{p['ip']} -j route show proto 17").stdout) == []
        with pytest.raises(OSError):
            tcp_exchange(o["pod_a"], o["pod_b"], p["pod_b"])


def test_kube_router_tunnels_are_adopted_or_rebuilt(overlay):
    a = overlay["a"]
    p4, p6 = PLAN[4], PLAN[6]
    tun4, tun6 = names.tunnel_name(p4["b"]), names.tunnel_name(p6["b"])
    # As kube-router makes them: `ip link add` (ip6tnl then has hoplimit 64 and
    # encaplimit 4, 8 bytes more overhead than the MTU we are given assumes).
    stale = names.tunnel_name("10.251.9.9")
    a.sh(f"""ip link add {tun4} type ipip local {p4['a']} remote {p4['b']} dev eth0
             ip link add {tun6} type ip6tnl mode ip6ip6 local {p6['a']} remote {p6['b']} dev eth0
             ip link set {tun4} up
             ip link set {tun6} up
             ip link add {stale} type ipip local {p4['a']} remote 10.251.9.9
             ip link add mytun type ipip local {p4['a']} remote 10.251.9.8""")
    index4 = _link(a, tun4)["ifindex"]

    applier = overlay["apply_a"]
    desired = [Tunnel(tun4, p4["b"], p4["a"]), Tunnel(tun6, p6["b"], p6["a"])]
    assert applier.sync_tunnels(desired) == sorted([tun6, stale])
    assert _link(a, tun4)["ifindex"] == index4
    assert _link(a, tun6)["linkinfo"]["info_data"].get("encap_limit") is None
    assert _link(a, stale) is None and _link(a, "mytun") is not None
    assert applier.sync_tunnels(desired) == []

    # The node's address moved: the tunnel is rebuilt with the new endpoint.
    a.exec(f"ip addr add 10.251.1.3/{p4['plen']} dev eth0")
    moved = [Tunnel(tun4, p4["b"], "10.251.1.3"), desired[1]]
    assert applier.sync_tunnels(moved) == [tun4]
    assert _link(a, tun4)["linkinfo"]["info_data"]["local"] == "10.251.1.3"
    assert applier.sync_tunnels(moved) == []
