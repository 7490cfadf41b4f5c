"""The route applier against the host kernel: real routes, real packets.

Node A and node B share a veth; B has a pod namespace behind it. The applier
runs in A and installs the pod CIDR via B; a TCP exchange from A reaches the
pod only while that route is there. Routes of other protocols, kube-router's
leftovers and drifted routes of ours are set up beside it.
"""
from __future__ import annotations

import json
import logging

import pytest

from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange
from proxyd.kernel import names
from proxyd.kernel.routes import RouteApplier, RouteSyncError
from proxyd.kernel.state import Route

pyroute2 = pytest.importorskip("pyroute2")

FAMILIES = {
    4: dict(a="10.250.0.1", b="10.250.0.2", plen=24, gw="10.244.1.1", pod="10.244.1.2",
            pod_cidr="10.244.1.0/24", held="10.244.2.0/24", other="10.244.7.0/24",
            stale="10.244.9.0/24", ip="ip"),
    6: dict(a="fd00:250::1", b="fd00:250::2", plen=64, gw="fd00:244:1::1", pod="fd00:244:1::2",
            pod_cidr="fd00:244:1::/64", held="fd00:244:2::/64", other="fd00:244:7::/64",
            stale="fd00:244:9::/64", ip="ip -6"),
}


def _addr(ns, dev, cidr):
    ns.exec(f"ip addr add {cidr} dev {dev}" + (" nodad" if ":" in cidr else ""))


@pytest.fixture
def nodes(netns_factory):
    a, b, pod = netns_factory("rt-a"), netns_factory("rt-b"), netns_factory("rt-pod")
    veth_pair(a, "eth0", b, "eth0")
    veth_pair(b, "pod0", pod, "eth0")
    b.sysctl("net.ipv4.ip_forward", 1)
    b.sysctl("net.ipv6.conf.all.forwarding", 1)
    for f in FAMILIES.values():
        _addr(a, "eth0", f"{f['a']}/{f['plen']}")
        _addr(b, "eth0", f"{f['b']}/{f['plen']}")
        _addr(b, "pod0", f"{f['gw']}/{f['plen']}")
        _addr(pod, "eth0", f"{f['pod']}/{f['plen']}")
        pod.exec(f"{f['ip']} route add default via {f['gw']}")
    return a, b, pod


@pytest.fixture
def applier_in():
    made = []

    def make(ns, **kw):
        applier = RouteApplier(ipr=pyroute2.IPRoute(netns=ns.name), **kw)
        made.append(applier)
        return applier

    yield make
    for applier in made:
        applier.close()


def _routes(ns, f, prefix):
    return json.loads(ns.exec(f"{f['ip']} -j route show {prefix}").stdout)


def _ours(ns, f):
    return json.loads(ns.exec(f"{f['ip']} -j route show proto {names.ROUTE_PROTOCOL}").stdout)


@pytest.mark.parametrize("version", [4, 6])
def test_pod_route_is_installed_withdrawn_and_foreign_routes_survive(nodes, applier_in,
                                                                     version, caplog):
    a, b, pod = nodes
    f = FAMILIES[version]
    # Another program's route elsewhere, another's for a prefix we will want, and a
    # route kube-router left behind (our protocol) that nobody wants any more.
    a.exec(f"{f['ip']} route add {f['other']} via {f['b']} proto static")
    a.exec(f"{f['ip']} route add {f['held']} via {f['b']} proto static metric 50")
    a.exec(f"{f['ip']} route add {f['stale']} via {f['b']} proto {names.ROUTE_PROTOCOL}")
    foreign_before = _routes(a, f, f["other"]) + _routes(a, f, f["held"])
    with pytest.raises(OSError):
        tcp_exchange(a, pod, f["pod"])

    applier = applier_in(a)
    desired = [Route(f["pod_cidr"], f["b"], None),
               Route(f["held"], f["b"], "eth0", onlink=True)]
    with caplog.at_level(logging.WARNING):
        assert applier.sync_routes(desired) == sorted([f["pod_cidr"], f["stale"]])
    assert any(f["held"] in r.getMessage() and "protocol 4" in r.getMessage()
               for r in caplog.records), caplog.text
    [ours] = _ours(a, f)
    assert (ours["dst"], ours["gateway"], ours["dev"]) == (f["pod_cidr"], f["b"], "eth0")
    assert tcp_exchange(a, pod, f["pod"]) == f["a"]
    assert applier.sync_routes(desired) == []

    # Someone rewrites our route: the next sync puts it back.
    a.exec(f"{f['ip']} route replace {f['pod_cidr']} dev eth0 proto {names.ROUTE_PROTOCOL}")
    assert applier.sync_routes(desired) == [f["pod_cidr"]]
    assert _ours(a, f)[0].get("gateway") == f["b"]

    assert applier.sync_routes([]) == [f["pod_cidr"]]
    assert _ours(a, f) == []
    with pytest.raises(OSError):
        tcp_exchange(a, pod, f["pod"])
    assert _routes(a, f, f["other"]) + _routes(a, f, f["held"]) == foreign_before
    assert applier.sync_routes([]) == []


def test_onlink_route_through_a_device_converges(nodes, applier_in):
    a, b, pod = nodes
    applier = applier_in(a)
    desired = [Route("10.244.1.0/24", "10.250.0.2", "eth0", onlink=True),
               Route("fd00:244:1::/64", "fd00:250::2", "eth0", onlink=True)]
    assert applier.sync_routes(desired) == ["10.244.1.0/24", "fd00:244:1::/64"]
    for f in FAMILIES.values():
        [ours] = _ours(a, f)
        assert "onlink" in ours["flags"], ours
        assert tcp_exchange(a, pod, f["pod"]) == f["a"]
    assert applier.sync_routes(desired) == []


def test_route_via_a_missing_device_fails_alone(nodes, applier_in):
    a, b, pod = nodes
    applier = applier_in(a)
    desired = [Route("10.244.1.0/24", "10.250.0.2", None),
               Route("10.244.5.0/24", "10.250.0.2", names.tunnel_name("10.250.0.2"),
                     onlink=True)]
    with pytest.raises(RouteSyncError, match="10.244.5.0/24"):
        applier.sync_routes(desired)
    assert tcp_exchange(a, pod, "10.244.1.2") == "10.250.0.1"
    assert [r["dst"] for r in _ours(a, FAMILIES[4])] == ["10.244.1.0/24"]


def test_a_table_of_its_own_and_another_protocol(nodes, applier_in):
    a, b, pod = nodes
    a.exec("ip route add 10.244.1.0/24 via 10.250.0.2 table 100 proto 17")
    applier = applier_in(a, protocol=186, table=100)
    assert applier.sync_routes([Route("10.244.1.0/24", "10.250.0.2", None)]) == []
    # Protocol 17 is kube-router's, not this applier's: the route is left alone.
    show = json.loads(a.exec("ip -N -j route show table 100").stdout)
    assert [(r["dst"], r["protocol"]) for r in show] == [("10.244.1.0/24", "17")]
    assert _ours(a, FAMILIES[4]) == []
    a.exec("ip route del 10.244.1.0/24 table 100")
    assert applier.sync_routes([Route("10.244.1.0/24", "10.250.0.2", None)]) == ["10.244.1.0/24"]
    show = json.loads(a.exec("ip -N -j route show table 100").stdout)
    assert [(r["dst"], r["protocol"]) for r in show] == [("10.244.1.0/24", "186")]
    assert applier.sync_routes([]) == ["10.244.1.0/24"]
    assert json.loads(a.exec("ip -N -j route show table 100").stdout) == []
