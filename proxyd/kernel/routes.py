"""The daemon's one writer of pod routes and ipip/ip6ip6 tunnels (pyroute2).

The routing controller hands in the whole desired state as ``Tunnel`` and
``Route`` values (proxyd/kernel/state.py) each sync; the applier reads the
kernel once, changes only the difference and touches only what is ours:

- a tunnel is ours when its name is ``names.is_tunnel_name`` and its kind is
  ipip or ip6tnl (kube-router's scheme, so its tunnels are adopted);
- a route is ours when it carries ``names.ROUTE_PROTOCOL`` (kube-router's
  0x11) in our table. A route of any other protocol is never changed, even
  one for a prefix we want: that prefix is then left to it, with a warning.

Measured on Linux 6.1 with pyroute2 0.9.7:
- An unknown link kind (ipip/ip6_tunnel compiled out or not loadable) makes
  RTM_NEWLINK fail with EOPNOTSUPP, not ENOENT.
- Two tunnels of one kind with the same local/remote cannot coexist: the
  second RTM_NEWLINK fails with EEXIST whatever its name.
- pyroute2 creates ip6tnl with hop limit 0 (inherit) and encaplimit 0, which
  still inserts the 8-byte encapsulation-limit option; ``ip link add ... type
  ip6tnl`` (how kube-router creates them) gives hoplimit 64, encaplimit 4.
  We set IP6_TNL_F_IGN_ENCAP_LIMIT so the overhead is exactly 40 bytes.
- A tunnel's routes vanish with it (and IPv4 ones when it goes down): a sync
  that deletes a tunnel must not count on deleting its routes itself.
- IPv6 routes get metric 1024 when none is given; IPv4 ones none.
- IPv6 refuses (EINVAL) an onlink gateway that its table already routes via
  another device, e.g. the remote node's underlay address: an IPv6 route
  through a tunnel names only the device. IPv4 accepts it.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from proxyd.kernel import names
from proxyd.kernel.state import Route, Tunnel

KIND = {4: "ipip", 6: "ip6tnl"}
MODULE = {"ipip": "ipip", "ip6tnl": "ip6_tunnel"}
OVERHEAD = {4: 20, 6: 40}          # bytes an encapsulating header adds (caller's MTU maths)
IPPROTO_IPV6 = 41                   # ip6tnl mode ip6ip6
IP6_TNL_F_IGN_ENCAP_LIMIT = 0x1
IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
RTN_UNICAST = 1
DEFAULT_METRIC = {socket.AF_INET: (None, 0), socket.AF_INET6: (1024,)}  # when none is given

log = logging.getLogger(__name__)


class RouteSyncError(RuntimeError):
    """Some tunnels or routes could not be applied; the rest were."""


class TunnelModuleMissing(RouteSyncError):
    pass


@dataclass(frozen=True)
class _KernelTunnel:
    index: int
    kind: str
    local: str
    remote: str
    ttl: int
    ign_encap_limit: bool
    mtu: int
    up: bool


@dataclass(frozen=True)
class _KernelRoute:
    prefix: str
    proto: int
    gateway: str | None
    oif: int | None
    onlink: bool
    plain: bool          # unicast, single next hop
    default_metric: bool # the metric a route gets when none is given
    delete_args: dict


def _canonical_ip(addr: str | None) -> str | None:
    return None if addr is None else ipaddress.ip_address(addr).compressed


def _check_tunnel(t: Tunnel) -> None:
    if not names.is_tunnel_name(t.name):
        raise ValueError(f"tunnel name {t.name!r} is not one of ours (names.tunnel_name)")
    if ipaddress.ip_address(t.local).version != t.version:
        raise ValueError(f"tunnel {t.name}: local {t.local} and remote {t.remote} differ in family")


def _tunnel_view(msg) -> _KernelTunnel | None:
    kind = msg.get(("linkinfo", "kind"))
    if kind not in MODULE or not names.is_tunnel_name(msg.get("ifname") or ""):
        return None
    key = "IPIP" if kind == "ipip" else "IP6TNL"
    data = lambda attr: msg.get(("linkinfo", "data", f"IFLA_{key}_{attr}"))  # noqa: E731
    return _KernelTunnel(
        index=msg["index"], kind=kind, local=_canonical_ip(data("LOCAL")),
        remote=_canonical_ip(data("REMOTE")), ttl=data("TTL") or 0,
        ign_encap_limit=bool((data("FLAGS") or 0) & IP6_TNL_F_IGN_ENCAP_LIMIT),
        mtu=msg.get("mtu"), up=bool(msg["flags"] & IFF_UP))


def _same_endpoints(have: _KernelTunnel, want: Tunnel) -> bool:
    return ((have.kind, have.local, have.remote, have.ttl)
            == (KIND[want.version], _canonical_ip(want.local), _canonical_ip(want.remote),
                want.ttl)
            and (want.version == 4 or have.ign_encap_limit))


def _route_view(msg) -> _KernelRoute:
    dst = msg.get("dst") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
    prefix = str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))
    gateway, oif = msg.get("gateway"), msg.get("oif")
    delete_args = {"dst": prefix, "table": msg.get("table"), "proto": msg["proto"],
                   "tos": msg["tos"], "type": msg["type"]}
    for key, value in (("priority", msg.get("priority")), ("gateway", gateway), ("oif", oif)):
        if value is not None:
            delete_args[key] = value
    return _KernelRoute(prefix=prefix, proto=msg["proto"], gateway=_canonical_ip(gateway),
                        oif=oif, onlink=bool(msg["flags"] & RTNH_F_ONLINK),
                        plain=msg["type"] == RTN_UNICAST and msg.get("multipath") is None,
                        default_metric=msg.get("priority") in DEFAULT_METRIC[msg["family"]],
                        delete_args=delete_args)


def _desired_routes(desired: Iterable[Route]) -> dict[str, Route]:
    """Routes by canonical prefix; a prefix with host bits set is a caller's bug."""
    out: dict[str, Route] = {}
    for r in desired:
        net = ipaddress.ip_network(r.prefix)
        if r.gateway is not None and ipaddress.ip_address(r.gateway).version != net.version:
            raise ValueError(f"route {r.prefix}: gateway {r.gateway} is of another family")
        if r.gateway is None and r.device is None:
            raise ValueError(f"route {r.prefix}: needs a gateway or a device")
        key = str(net)
        if out.get(key, r) != r:
            raise ValueError(f"two different routes for {key}: {out[key]} and {r}")
        out[key] = r
    return out


class RouteApplier:
    def __init__(self, *, protocol: int = names.ROUTE_PROTOCOL, table: int = 254, ipr=None,
                 log: logging.Logger = log):
        self._ipr = IPRoute() if ipr is None else ipr
        self._protocol = protocol
        self._table = table
        self._log = log
        self._conflicts: set[tuple[str, int]] = set()

    def close(self) -> None:
        self._ipr.close()

    # ---- tunnels ---------------------------------------------------------

    def _links(self) -> list:
        return list(self._ipr.link("dump"))

    def sync_tunnels(self, desired: Iterable[Tunnel]) -> list[str]:
        """Create missing tunnels (up, with the right local/remote/ttl), recreate ones whose
        endpoints differ, delete owned tunnels not desired. Returns the names changed."""
        want = {}
        for t in desired:
            _check_tunnel(t)
            if want.get(t.name, t) != t:
                raise ValueError(f"two different tunnels named {t.name}: {want[t.name]} and {t}")
            want[t.name] = t
        links = self._links()
        have = {msg.get("ifname"): view for msg in links if (view := _tunnel_view(msg))}
        foreign = {msg.get("ifname") for msg in links} - have.keys()
        changed, errors = [], []
        # Stale ones first: a recreated tunnel may need the endpoints they hold.
        for name in sorted(have.keys() - want.keys()):
            try:
                self._delete_link(have[name].index)
                changed.append(name)
            except (NetlinkError, OSError) as e:
                self._log.error("tunnel %s: cannot delete: %s", name, e)
                errors.append(f"{name}: {e}")
        for name, t in sorted(want.items()):
            try:
                if self._ensure_tunnel(t, have.get(name), name in foreign):
                    changed.append(name)
            except TunnelModuleMissing:
                raise
            except (NetlinkError, OSError, RouteSyncError) as e:
                self._log.error("tunnel %s to %s: %s", name, t.remote, e)
                errors.append(f"{name}: {e}")
        if errors:
            raise RouteSyncError("tunnels not applied: " + "; ".join(errors))
        return sorted(changed)

    def _ensure_tunnel(self, t: Tunnel, have: _KernelTunnel | None, name_taken: bool) -> bool:
        if name_taken:
            raise RouteSyncError(f"interface {t.name} exists and is not one of our tunnels")
        if have is not None and _same_endpoints(have, t):
            settings = {}
            if not have.up:
                settings["state"] = "up"
            if t.mtu is not None and have.mtu != t.mtu:
                settings["mtu"] = t.mtu
            if settings:
                self._ipr.link("set", index=have.index, **settings)
            return bool(settings)
        if have is not None:
            self._log.info("tunnel %s: endpoints changed, recreating", t.name)
            self._delete_link(have.index)
        self._create_tunnel(t)
        return True

    def _create_tunnel(self, t: Tunnel) -> None:
        kind = KIND[t.version]
        spec = {f"{kind}_local": t.local, f"{kind}_remote": t.remote, f"{kind}_ttl": t.ttl}
        if kind == "ip6tnl":
            spec.update(ip6tnl_proto=IPPROTO_IPV6, ip6tnl_flags=IP6_TNL_F_IGN_ENCAP_LIMIT)
        if t.mtu is not None:
            spec["mtu"] = t.mtu
        try:
            self._ipr.link("add", ifname=t.name, kind=kind, **spec)
        except NetlinkError as e:
            if e.code == errno.EOPNOTSUPP:
                raise TunnelModuleMissing(
                    f"cannot create {kind} tunnel {t.name}: this kernel lacks the "
                    f"{MODULE[kind]} module (modprobe {MODULE[kind]})") from e
            if e.code == errno.EEXIST:
                raise RouteSyncError(f"another {kind} tunnel from {t.local} to {t.remote} "
                                     f"exists under a different name") from e
            raise
        (index,) = self._ipr.link_lookup(ifname=t.name)
        self._ipr.link("set", index=index, state="up")

    def _delete_link(self, index: int) -> None:
        try:
            self._ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise

    # ---- routes ----------------------------------------------------------

    def _routes(self) -> list[_KernelRoute]:
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            found += [_route_view(m) for m in self._ipr.route("dump", family=family)
                      if m.get("table") == self._table]
        return found

    def installed(self) -> list[tuple[str, str]]:
        """(prefix, next hop) of every route of ours: its gateway, or its tunnel's remote."""
        remotes = {msg["index"]: view.remote for msg in self._links()
                   if (view := _tunnel_view(msg))}
        return sorted((kr.prefix, kr.gateway or remotes[kr.oif]) for kr in self._routes()
                      if kr.proto == self._protocol and (kr.gateway or kr.oif in remotes))

    def sync_routes(self, desired: Iterable[Route]) -> list[str]:
        """Routes of our protocol in our table are ours: replace those missing or different,
        delete ours not desired; never touch a route of another protocol (a prefix one holds
        is left to it, with a warning). Returns the prefixes changed."""
        want = _desired_routes(desired)
        index = {msg.get("ifname"): msg["index"] for msg in self._links()}
        ours: dict[str, list[_KernelRoute]] = {}
        foreign: dict[str, _KernelRoute] = {}
        for kr in self._routes():
            if kr.proto == self._protocol:
                ours.setdefault(kr.prefix, []).append(kr)
            else:
                foreign.setdefault(kr.prefix, kr)
        changed, errors = set(), []
        for prefix in sorted(ours.keys() - want.keys()):
            for kr in ours[prefix]:
                self._delete_route(kr)
            changed.add(prefix)
        for prefix, r in sorted(want.items()):
            if prefix in foreign:
                self._warn_conflict(r, foreign[prefix])
                continue
            try:
                if self._ensure_route(prefix, r, ours.get(prefix, []), index):
                    changed.add(prefix)
            except (NetlinkError, OSError, RouteSyncError) as e:
                self._log.error("route %s: %s", prefix, e)
                errors.append(f"{prefix}: {e}")
        self._conflicts &= {(p, kr.proto) for p, kr in foreign.items() if p in want}
        if errors:
            raise RouteSyncError("routes not applied: " + "; ".join(errors))
        return sorted(changed)

    def _ensure_route(self, prefix: str, r: Route, have: list[_KernelRoute],
                      index: dict[str, int]) -> bool:
        oif = None
        if r.device is not None:
            oif = index.get(r.device)
            if oif is None:
                raise RouteSyncError(f"device {r.device} does not exist")
        if len(have) == 1 and _route_matches(have[0], r, oif):
            return False
        spec = {"dst": prefix, "proto": self._protocol, "table": self._table}
        if r.gateway is not None:
            spec["gateway"] = r.gateway
        if oif is not None:
            spec["oif"] = oif
        if r.onlink:
            spec["flags"] = RTNH_F_ONLINK
        try:
            self._ipr.route("replace", **spec)
        except NetlinkError as e:
            if e.code == errno.EINVAL and r.onlink and ":" in prefix:
                raise RouteSyncError(f"{e}: IPv6 refuses an onlink gateway ({r.gateway}) that "
                                     f"it routes through another device than {r.device}; "
                                     f"route through the device alone") from e
            raise
        # "replace" only finds a route of the same metric: ours at any other one would stay
        # beside the new route.
        for kr in have:
            if not kr.default_metric:
                self._delete_route(kr)
        return True

    def _delete_route(self, kr: _KernelRoute) -> None:
        try:
            self._ipr.route("del", **kr.delete_args)
        except NetlinkError as e:
            # Gone already: its device went away between the dump and now.
            if e.code not in (errno.ESRCH, errno.ENODEV):
                raise

    def _warn_conflict(self, r: Route, other: _KernelRoute) -> None:
        key = (other.prefix, other.proto)
        if key in self._conflicts:
            return
        self._conflicts.add(key)
        self._log.warning(
            "route %s: wanted via %s dev %s, but the kernel's table %d holds a route of protocol "
            "%d for it (via %s, ifindex %s); leaving that one alone", other.prefix, r.gateway,
            r.device, self._table, other.proto, other.gateway, other.oif)


def _route_matches(have: _KernelRoute, want: Route, oif: int | None) -> bool:
    return (have.plain and have.default_metric and have.gateway == _canonical_ip(want.gateway)
            and have.onlink == want.onlink and (oif is None or have.oif == oif))
