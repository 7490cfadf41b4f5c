"""The route applier against a small stateful model of the kernel's links and routes
(the rtnetlink calls it uses, with the kernel's answers measured on Linux 6.1)."""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket

import pytest

from helpers.netlink_fakes import Msg, refuse
from proxyd.kernel import names
from proxyd.kernel.routes import RouteApplier, RouteSyncError, TunnelModuleMissing
from proxyd.kernel.state import Route, Tunnel

A4, B4, C4 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
A6, B6 = "fd00::1", "fd00::2"
TUN_B4, TUN_C4, TUN_B6 = names.tunnel_name(B4), names.tunnel_name(C4), names.tunnel_name(B6)
PROTO = names.ROUTE_PROTOCOL


class FakeKernel:
    """Links, addresses and routes of one namespace; ``kinds`` are the link kinds it knows."""

    def __init__(self, kinds=("loopback", "veth", "ipip", "ip6tnl")):
        self.kinds = set(kinds)
        self.links: dict[int, Msg] = {}
        self.connected: dict[ipaddress._BaseNetwork, int] = {}
        self.routes: list[Msg] = []
        self.after_dump = None
        self.closed = False
        self._next = 1
        self.add_link("lo", "loopback", up=True)

    # -- set-up helpers (what other programs or the node's own config did) --
    def add_link(self, name, kind, up=False, mtu=1500, **data):
        self.link("add", ifname=name, kind=kind, mtu=mtu, **data)
        if up:
            self.link("set", index=self.index(name), state="up")
        return self.index(name)

    def address(self, name, cidr):
        self.connected[ipaddress.ip_network(cidr, strict=False)] = self.index(name)

    def add_route(self, dst, proto=4, table=254, priority=None, **kw):
        net = ipaddress.ip_network(dst)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        if family == socket.AF_INET6 and not priority:
            priority = 1024
        self.routes.append(Msg(family=family, dst=str(net.network_address), dst_len=net.prefixlen,
                               proto=proto, table=table, priority=priority, tos=0, type=1,
                               flags=kw.pop("flags", 0), **kw))

    def index(self, name):
        (i,) = self.link_lookup(ifname=name)
        return i

    def tunnel(self, name):
        msg = self.links[self.index(name)]
        kind = msg.get(("linkinfo", "kind"))
        key = "IPIP" if kind == "ipip" else "IP6TNL"
        data = {k.split("_", 2)[2].lower(): v
                for k, v in msg["linkinfo"]["data"].items() if k.startswith(f"IFLA_{key}_")}
        return dict(kind=kind, up=bool(msg["flags"] & 1), mtu=msg["mtu"], **data)

    def ours(self):
        return sorted((self._prefix(r), r.get("gateway"), r.get("oif"), r["flags"])
                      for r in self.routes if r["proto"] == PROTO)

    @staticmethod
    def _prefix(r):
        return f"{r['dst']}/{r['dst_len']}"

    # -- the IPRoute calls ---------------------------------------------------
    def close(self):
        self.closed = True

    def link_lookup(self, ifname):
        return [i for i, m in self.links.items() if m["ifname"] == ifname]

    def link(self, command, index=None, **kw):
        if command == "dump":
            return [Msg(m) for m in self.links.values()]
        if command == "add":
            return self._add_link(**kw)
        if index not in self.links:
            raise refuse(errno.ENODEV)
        if command == "del":
            del self.links[index]
            self.routes = [r for r in self.routes if r.get("oif") != index]
        elif command == "set":
            if kw.get("state") == "up":
                self.links[index]["flags"] |= 1
            if "mtu" in kw:
                self.links[index]["mtu"] = kw["mtu"]
        return []

    def _add_link(self, ifname, kind, mtu=None, **spec):
        if kind not in self.kinds:
            raise refuse(errno.EOPNOTSUPP)
        if self.link_lookup(ifname=ifname):
            raise refuse(errno.EEXIST)
        data = {f"IFLA_{k.upper()}": v for k, v in spec.items()}
        if kind in ("ipip", "ip6tnl"):
            key = "IPIP" if kind == "ipip" else "IP6TNL"
            data.setdefault(f"IFLA_{key}_TTL", 0)
            ends = (data[f"IFLA_{key}_LOCAL"], data[f"IFLA_{key}_REMOTE"])
            for m in self.links.values():
                if m.get(("linkinfo", "kind")) == kind and ends == (
                        m.get(("linkinfo", "data", f"IFLA_{key}_LOCAL")),
                        m.get(("linkinfo", "data", f"IFLA_{key}_REMOTE"))):
                    raise refuse(errno.EEXIST)
            mtu = mtu or (1480 if kind == "ipip" else 1452)
        self.links[self._next] = Msg(index=self._next, ifname=ifname, flags=0, mtu=mtu or 1500,
                                     linkinfo={"kind": kind, "data": data})
        self._next += 1
        return []

    def route(self, command, family=None, **kw):
        if command == "dump":
            found = [Msg(r) for r in self.routes if r["family"] == family]
            if self.after_dump:
                self.after_dump()
                self.after_dump = None
            return found
        net = ipaddress.ip_network(kw.pop("dst"))
        fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
        same = [r for r in self.routes
                if (r["family"], r["dst"], r["dst_len"], r["table"]) ==
                (fam, str(net.network_address), net.prefixlen, kw.get("table", 254))]
        if command == "del":
            match = [r for r in same if all(r.get(k) == v for k, v in kw.items())]
            if not match:
                raise refuse(errno.ESRCH)
            self.routes.remove(match[0])
            return []
        assert command == "replace", command
        if "oif" in kw and kw["oif"] not in self.links:
            raise refuse(errno.ENODEV)
        if "oif" not in kw:
            gw = ipaddress.ip_address(kw["gateway"])
            hits = [i for n, i in self.connected.items() if gw in n]
            if not hits:
                raise refuse(errno.ENETUNREACH)
            kw["oif"] = hits[0]
        default = 1024 if fam == socket.AF_INET6 else None
        for r in same:  # the kernel replaces the route of the same metric, whoever made it
            if r.get("priority") == default:
                self.routes.remove(r)
        self.add_route(str(net), priority=default, **kw)
        return []


@pytest.fixture
def kernel():
    k = FakeKernel()
    k.add_link("eth0", "veth", up=True)
    k.address("eth0", "10.0.0.1/24")
    k.address("eth0", "fd00::1/64")
    return k


@pytest.fixture
def applier(kernel):
    return RouteApplier(ipr=kernel)


def overlay():
    return [Tunnel(TUN_B4, B4, A4, mtu=1430), Tunnel(TUN_B6, B6, A6)]


# ---- names -------------------------------------------------------------------

def test_tunnel_names_are_kube_routers():
    # sha256("10002") and sha256("fd001"), computed outside this code.
    assert names.tunnel_name("10.0.0.2") == "tun-56acd2f8550"
    assert names.tunnel_name("fd00:0:0::1") == names.tunnel_name("fd00::1") == "tun-5393ee7fb5c"
    assert names.is_tunnel_name("tun-56acd2f8550")
    for other in ("tunl0", "ip6tnl0", "tun-56acd2f855", "tun-56ACD2F8550", "tun-56acd2f855z",
                  "kube-tunnel-if"):
        assert not names.is_tunnel_name(other), other


# ---- tunnels -----------------------------------------------------------------

def test_tunnels_are_created_up_with_their_endpoints_and_converge(kernel, applier):
    assert applier.sync_tunnels(overlay()) == sorted([TUN_B4, TUN_B6])
    assert kernel.tunnel(TUN_B4) == dict(kind="ipip", up=True, mtu=1430, local=A4, remote=B4,
                                         ttl=0)
    six = kernel.tunnel(TUN_B6)
    assert (six["kind"], six["up"], six["local"], six["remote"]) == ("ip6tnl", True, A6, B6)
    assert (six["proto"], six["flags"] & 1) == (41, 1)   # ip6ip6, no encapsulation-limit option
    assert applier.sync_tunnels(overlay()) == []


def test_only_owned_tunnels_are_deleted(kernel, applier):
    kernel.add_link("tunl0", "ipip", ipip_local="0.0.0.0", ipip_remote="0.0.0.0")
    kernel.add_link("mytun", "ipip", ipip_local=A4, ipip_remote="10.9.9.9")
    kernel.add_link(TUN_C4, "ipip", ipip_local=A4, ipip_remote=C4)
    assert applier.sync_tunnels(overlay()) == sorted([TUN_B4, TUN_B6, TUN_C4])
    assert kernel.link_lookup(ifname=TUN_C4) == []
    assert kernel.link_lookup(ifname="tunl0") and kernel.link_lookup(ifname="mytun")
    assert applier.sync_tunnels([]) == sorted([TUN_B4, TUN_B6])
    assert sorted(m["ifname"] for m in kernel.links.values()) == ["eth0", "lo", "mytun", "tunl0"]


def test_a_tunnel_with_other_endpoints_is_rebuilt_and_loses_its_routes(kernel, applier):
    applier.sync_tunnels(overlay())
    route = Route("10.244.2.0/24", B4, TUN_B4, onlink=True)
    assert applier.sync_routes([route]) == ["10.244.2.0/24"]
    kernel.address("eth0", "10.0.1.1/24")
    moved = [Tunnel(TUN_B4, B4, "10.0.1.1", mtu=1430), overlay()[1]]
    assert applier.sync_tunnels(moved) == [TUN_B4]
    assert kernel.tunnel(TUN_B4)["local"] == "10.0.1.1"
    assert kernel.ours() == []          # went with the old device
    assert applier.sync_routes([route]) == ["10.244.2.0/24"]
    assert kernel.ours() == [("10.244.2.0/24", B4, kernel.index(TUN_B4), 4)]


def test_adopted_tunnels_keep_their_index_and_get_fixed_up(kernel, applier):
    # kube-router's: ipip with ttl inherit, left down and with the default MTU.
    index = kernel.add_link(TUN_B4, "ipip", ipip_local=A4, ipip_remote=B4, ipip_ttl=0)
    # kube-router's ip6tnl: hop limit 64 and an encapsulation-limit option.
    kernel.add_link(TUN_B6, "ip6tnl", ip6tnl_local=A6, ip6tnl_remote=B6, ip6tnl_ttl=64,
                    ip6tnl_flags=0, up=True)
    assert applier.sync_tunnels(overlay()) == sorted([TUN_B4, TUN_B6])
    assert kernel.index(TUN_B4) == index
    assert kernel.tunnel(TUN_B4)["up"] and kernel.tunnel(TUN_B4)["mtu"] == 1430
    assert kernel.tunnel(TUN_B6)["ttl"] == 0 and kernel.tunnel(TUN_B6)["flags"] & 1
    assert applier.sync_tunnels(overlay()) == []


def test_a_missing_kernel_module_is_named():
    k = FakeKernel(kinds=("loopback", "veth"))
    with pytest.raises(TunnelModuleMissing, match=r"ipip module \(modprobe ipip\)"):
        RouteApplier(ipr=k).sync_tunnels([Tunnel(TUN_B4, B4, A4)])
    with pytest.raises(TunnelModuleMissing, match="ip6_tunnel module"):
        RouteApplier(ipr=k).sync_tunnels([Tunnel(TUN_B6, B6, A6)])


def test_a_tunnel_that_cannot_be_made_does_not_stop_the_others(kernel, applier, caplog):
    kernel.add_link("mytun", "ipip", ipip_local=A4, ipip_remote=B4)   # the same endpoints
    kernel.add_link(TUN_C4, "veth")                                    # our name, not a tunnel
    desired = overlay() + [Tunnel(TUN_C4, C4, A4)]
    with pytest.raises(RouteSyncError) as info:
        applier.sync_tunnels(desired)
    assert "different name" in str(info.value) and "not one of our tunnels" in str(info.value)
    assert kernel.tunnel(TUN_B6)["up"]
    assert kernel.link_lookup(ifname="mytun") and kernel.links[kernel.index(TUN_C4)][
        "linkinfo"]["kind"] == "veth"


def test_desired_tunnels_are_checked(applier):
    with pytest.raises(ValueError, match="not one of ours"):
        applier.sync_tunnels([Tunnel("kube-tunnel-if", B4, A4)])
    with pytest.raises(ValueError, match="family"):
        applier.sync_tunnels([Tunnel(TUN_B6, B6, A4)])
    with pytest.raises(ValueError, match="two different"):
        applier.sync_tunnels([Tunnel(TUN_B4, B4, A4), Tunnel(TUN_B4, B4, A4, mtu=1400)])


# ---- routes ------------------------------------------------------------------

def test_routes_are_installed_and_converge(kernel, applier):
    applier.sync_tunnels(overlay())
    desired = [Route("10.244.1.0/24", B4, None), Route("10.244.2.0/24", B4, TUN_B4, onlink=True),
               Route("fd00:244:2::/64", None, TUN_B6)]
    assert applier.sync_routes(desired) == ["10.244.1.0/24", "10.244.2.0/24", "fd00:244:2::/64"]
    assert kernel.ours() == sorted([("10.244.1.0/24", B4, kernel.index("eth0"), 0),
                                    ("10.244.2.0/24", B4, kernel.index(TUN_B4), 4),
                                    ("fd00:244:2::/64", None, kernel.index(TUN_B6), 0)])
    assert applier.sync_routes(desired) == []


def test_ours_that_drifted_or_nobody_wants_are_fixed(kernel, applier):
    kernel.add_route("10.244.1.0/24", proto=PROTO, gateway=C4, oif=kernel.index("eth0"))
    kernel.add_route("10.244.9.0/24", proto=PROTO, gateway=C4, oif=kernel.index("eth0"))
    kernel.add_route("fd00:244:1::/64", proto=PROTO, gateway=B6, oif=kernel.index("eth0"),
                     priority=100)
    desired = [Route("10.244.1.0/24", B4, None), Route("fd00:244:1::/64", B6, None)]
    assert applier.sync_routes(desired) == ["10.244.1.0/24", "10.244.9.0/24", "fd00:244:1::/64"]
    eth0 = kernel.index("eth0")
    assert kernel.ours() == [("10.244.1.0/24", B4, eth0, 0), ("fd00:244:1::/64", B6, eth0, 0)]
    assert [r["priority"] for r in kernel.routes if r["family"] == socket.AF_INET6] == [1024]
    assert applier.sync_routes(desired) == []


def test_routes_of_others_are_never_touched(kernel, applier, caplog):
    eth0 = kernel.index("eth0")
    kernel.add_route("10.244.1.0/24", proto=4, gateway=C4, oif=eth0)          # static, same prefix
    kernel.add_route("10.244.7.0/24", proto=186, gateway=C4, oif=eth0)        # bird's
    kernel.add_route("10.244.1.0/24", proto=PROTO, table=77, gateway=C4, oif=eth0)
    before = [dict(r) for r in kernel.routes]
    desired = [Route("10.244.1.0/24", B4, None)]
    with caplog.at_level(logging.WARNING):
        assert applier.sync_routes(desired) == []
        assert applier.sync_routes(desired) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings          # once per conflict, not every sync
    assert "10.244.1.0/24" in warnings[0] and "protocol 4" in warnings[0] and C4 in warnings[0]
    assert applier.sync_routes([]) == []
    assert [dict(r) for r in kernel.routes] == before


def test_a_route_gone_with_its_device_does_not_fail_the_sync(kernel, applier):
    applier.sync_tunnels(overlay())
    applier.sync_routes([Route("10.244.2.0/24", B4, TUN_B4, onlink=True),
                         Route("10.244.1.0/24", B4, None)])
    # The tunnel disappears between the route dump and the delete.
    kernel.after_dump = lambda: kernel.link("del", index=kernel.index(TUN_B4))
    assert applier.sync_routes([Route("10.244.1.0/24", B4, None)]) == ["10.244.2.0/24"]
    assert [r[0] for r in kernel.ours()] == ["10.244.1.0/24"]


def test_a_route_via_a_missing_device_fails_after_the_others(kernel, applier):
    desired = [Route("10.244.2.0/24", B4, TUN_B4, onlink=True), Route("10.244.1.0/24", B4, None)]
    with pytest.raises(RouteSyncError, match=f"10.244.2.0/24: device {TUN_B4} does not exist"):
        applier.sync_routes(desired)
    assert [r[0] for r in kernel.ours()] == ["10.244.1.0/24"]


def test_desired_routes_are_checked(applier):
    with pytest.raises(ValueError, match="host bits"):
        applier.sync_routes([Route("10.244.1.1/24", B4, None)])
    with pytest.raises(ValueError, match="another family"):
        applier.sync_routes([Route("fd00:244:1::/64", B4, None)])
    with pytest.raises(ValueError, match="two different routes"):
        applier.sync_routes([Route("10.244.1.0/24", B4, None), Route("10.244.1.0/24", C4, None)])


def test_a_table_and_protocol_of_its_own(kernel):
    kernel.add_route("10.244.1.0/24", proto=PROTO, gateway=C4, oif=kernel.index("eth0"))
    applier = RouteApplier(ipr=kernel, protocol=186, table=100)
    assert applier.sync_routes([Route("10.244.3.0/24", B4, None)]) == ["10.244.3.0/24"]
    [mine] = [r for r in kernel.routes if r["proto"] == 186]
    assert (mine["table"], mine["dst"]) == (100, "10.244.3.0")
    assert kernel.ours() == [("10.244.1.0/24", C4, kernel.index("eth0"), 0)]
    applier.close()
    assert kernel.closed
