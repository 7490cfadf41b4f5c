"""The desired-state vocabulary: the values the pure builders produce and the appliers take.

Plain frozen values and the checks that need nothing but the value itself;
standard library only, so a builder (proxyd/netpol/build.py, proxyd/proxy/build.py,
proxyd/routing/model.py) never loads pyroute2 or an applier. What a value
means to the kernel, and the checks that need the kernel's view or the
caller's ``owned()``, stay with its applier:

- ``Chain``, ``Hook``, ``save_quote``: proxyd/kernel/iptables.py
- ``IPSet``: proxyd/kernel/ipset.py (entries canonicalised to ``ipset save``'s form)
- ``VirtualService``, ``Destination``: proxyd/kernel/ipvs.py
- ``Tunnel``, ``Route``: proxyd/kernel/routes.py
"""
from __future__ import annotations

import copy
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

# ---- iptables ---------------------------------------------------------------------------

_BARE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def save_quote(value: str) -> str:
    """``value`` as iptables-save prints a string argument (xtables_save_string)."""
    if value and all(c in _BARE for c in value):
        return value
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f'"{escaped}"'


@dataclass(frozen=True)
class Chain:
    name: str                  # ours, <= 28 chars
    rules: tuple[str, ...]     # each rule's text exactly as iptables-save prints it after "-A NAME "


@dataclass(frozen=True)
class Hook:
    builtin: str               # "INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"
    rule: str                  # as iptables-save prints it, jumping to one of our chains


# ---- ipset ------------------------------------------------------------------------------

MAX_NAME_LEN = 31
FAMILIES = {"inet": 4, "inet6": 6}
SET_FAMILY = {4: "inet", 6: "inet6"}          # an IP family's name in ipset
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite")


def _address(entry: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(entry)
    if addr.version != version:
        raise ValueError(f"{entry} is not an IPv{version} address")
    return addr


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _host(entry: str, version: int) -> tuple[int, str] | None:
    """A plain address through the C parser: sets hold thousands of pod IPs, and
    ipaddress costs ~10 us each on every sync. None when ``entry`` is not one."""
    if "/" in entry:
        return None
    try:
        packed = socket.inet_pton(_AF[version], entry)
    except OSError:
        return None
    return int.from_bytes(packed, "big"), socket.inet_ntop(_AF[version], packed)


def _canonical_ip(entry: str, version: int) -> tuple[tuple, str]:
    host = _host(entry, version)
    if host is not None:
        return (host[0],), host[1]
    net = ipaddress.ip_network(entry, strict=False)
    if net.prefixlen != net.max_prefixlen:
        raise ValueError(f"{entry} is a network: a hash:ip set would hold each of its "
                         f"{net.num_addresses} addresses (use hash:net)")
    addr = _address(str(net.network_address), version)
    return (int(addr),), str(addr)


def _canonical_net(entry: str, version: int) -> tuple[tuple, str]:
    host = _host(entry, version)
    if host is not None:
        return (host[0], 32 if version == 4 else 128), host[1]
    net = ipaddress.ip_network(entry, strict=False)
    if net.version != version:
        raise ValueError(f"{entry} is not an IPv{version} network")
    if net.prefixlen == 0:
        # The kernel's hash:net takes prefix lengths 1..32 (1..128) only.
        raise ValueError(f"{entry}: ipset cannot hold a /0 in hash:net; "
                         "split it into two /1 networks")
    key = (int(net.network_address), net.prefixlen)
    if net.prefixlen == net.max_prefixlen:
        return key, str(net.network_address)
    return key, str(net)


def _canonical_ip_port(entry: str, version: int) -> tuple[tuple, str]:
    addr_text, sep, port_text = entry.partition(",")
    proto, _, number = port_text.rpartition(":")
    proto = proto or "tcp"
    if not sep or proto not in PORT_PROTOCOLS or not number.isdigit() or int(number) > 65535:
        raise ValueError(f"{entry}: want ADDRESS,[{'|'.join(PORT_PROTOCOLS)}:]PORT "
                         "with a numeric port")
    addr = _address(addr_text, version)
    return (int(addr), proto, int(number)), f"{addr},{proto}:{int(number)}"


# kind -> entry canonicaliser: (sort key, the text `ipset save` prints for it).
KINDS: dict[str, Callable[[str, int], tuple[tuple, str]]] = {
    "hash:ip": _canonical_ip,
    "hash:net": _canonical_net,
    "hash:ip,port": _canonical_ip_port,
}


def check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LEN or any(c.isspace() for c in name):
        raise ValueError(f"ipset name {name!r}: want 1..{MAX_NAME_LEN} characters "
                         "without whitespace")


@dataclass(frozen=True)
class IPSet:
    """One set as callers want it; entries are stored in ``ipset save``'s form."""
    name: str
    kind: str
    family: str
    entries: frozenset[str] = frozenset()

    def __post_init__(self):
        check_name(self.name)
        if self.kind not in KINDS:
            raise ValueError(f"ipset {self.name}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if self.family not in FAMILIES:
            raise ValueError(f"ipset {self.name}: family {self.family!r} is not inet or inet6")
        canonical = KINDS[self.kind]
        out = set()
        for entry in self.entries:
            try:
                out.add(canonical(entry.strip(), FAMILIES[self.family])[1])
            except ValueError as exc:
                raise ValueError(f"ipset {self.name} ({self.kind} {self.family}): {exc}") from None
        object.__setattr__(self, "entries", frozenset(out))

    def changed(self, added: Iterable[str] = (), removed: Iterable[str] = ()) -> IPSet:
        """This set with ``added`` entries (checked, as at creation) and without
        ``removed`` ones (in stored form); the entries kept are not checked again."""
        fresh = IPSet(self.name, self.kind, self.family, frozenset(added)).entries
        out = copy.copy(self)
        object.__setattr__(out, "entries", (self.entries - frozenset(removed)) | fresh)
        return out

    def sorted_entries(self) -> list[str]:
        canonical, version = KINDS[self.kind], FAMILIES[self.family]
        return sorted(self.entries, key=lambda e: canonical(e, version)[0])


# ---- IPVS -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    address: str
    port: int
    weight: int = 1
    forward: str = "masq"          # "masq" (NAT) | "tunnel" (ipip, for DSR) | "route" (direct)


@dataclass(frozen=True)
class VirtualService:
    protocol: str                  # "TCP" | "UDP" | "SCTP"
    address: str                   # VIP (v4 or v6)
    port: int
    scheduler: str = "rr"          # rr, wrr, lc, wlc, sh, dh, mh, ...
    persistent: int = 0            # seconds of session affinity (ClientIP); 0 = none
    flags: frozenset[str] = frozenset()   # {"hashed", "one-packet", "flag-1", ...}
    destinations: tuple[Destination, ...] = ()


# ---- routes and tunnels -----------------------------------------------------------------

@dataclass(frozen=True)
class Tunnel:
    name: str            # names.tunnel_name(remote)
    remote: str          # the other node's address
    local: str           # this node's address of the same family
    mtu: int | None = None   # None: the kernel's default; else the underlay's minus routes.OVERHEAD
    ttl: int = 0         # outer TTL / hop limit; 0 = inherit the inner packet's

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.remote).version


@dataclass(frozen=True)
class Route:
    prefix: str          # "10.244.1.0/24" / "fd00:244:1::/64"
    gateway: str | None  # next hop (None for a route only via a device)
    device: str | None   # e.g. a tunnel's name; None = the kernel picks by gateway
    onlink: bool = False # needed for a gateway reached through a tunnel
