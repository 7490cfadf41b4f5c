"""The few rtnetlink requests the CNI plugins need, on a raw NETLINK_ROUTE socket.

Standard library only: ``import pyroute2`` costs ~130 ms and the runtime execs a
plugin for every pod ADD and DEL. A ``Netlink`` object is bound to the network
namespace its socket was opened in, for the socket's whole life.

Every failed request raises ``OSError`` with the kernel's errno and a message that
names the operation and the object, e.g. ``add address 10.1.0.2/24 on eth0: File exists``.
"""
from __future__ import annotations

import _socket
import errno as _errno
import os
import struct

from cni.record import Record
from lowlevel import ipnet

AF_UNSPEC, AF_INET, AF_INET6, AF_BRIDGE = 0, 2, 10, 7
NETLINK_ROUTE = 0

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000

IFF_UP, IFF_PROMISC = 0x1, 0x100

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 12, 18, 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_VLAN_FILTERING = 7
IFLA_BRPORT_MODE = 4            # "hairpin mode" in iproute2 and sysfs
IFLA_BRIDGE_FLAGS, IFLA_BRIDGE_VLAN_INFO = 0, 2
BRIDGE_FLAGS_MASTER = 1
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
VETH_INFO_PEER = 1

IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    data = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return data + b"\0" * (_align(len(data)) - len(data))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def attr_u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=B", value))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """rtattrs from ``offset`` on, keyed by type (nested flag stripped); the last one wins."""
    out = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return out


def _cstr(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode()


def _u32(value: bytes | None) -> int:
    return struct.unpack("=I", value[:4])[0] if value else 0


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class Link(Record):
    """``peer_index`` is IFLA_LINK: for a veth, the peer's index in the peer's namespace."""
    __slots__ = ("index", "name", "flags", "mtu", "mac", "master", "kind", "peer_index")

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)


class Address(Record):
    """``interface``: an ipnet.Interface."""
    __slots__ = ("index", "interface", "scope", "flags")


class Route(Record):
    """``dst``: an ipnet.Network; ``gateway``: an ipnet.Address or None."""
    __slots__ = ("dst", "gateway", "oif", "table", "protocol", "scope")


class Netlink:
    """One rtnetlink socket; requests are synchronous and acknowledged."""

    def __init__(self):
        self._sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one message; return the (type, body) replies; raise OSError naming ``what``."""
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type,
                                flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self._sock.sendto(header + payload, (0, 0))
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                body = data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise OSError(code, f"{what}: {os.strerror(code)}")
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                # A single reply to a get is followed by the ack asked for: keep reading.
                replies.append((kind, body))

    # ---- links -----------------------------------------------------------------

    def _link_from(self, body: bytes) -> Link:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
        attrs = parse_attrs(body, _IFINFOMSG.size)
        info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
        return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME, b"")), flags=flags,
                    mtu=_u32(attrs.get(IFLA_MTU)), mac=mac_str(attrs.get(IFLA_ADDRESS, b"")),
                    master=_u32(attrs.get(IFLA_MASTER)),
                    kind=_cstr(info.get(IFLA_INFO_KIND, b"")),
                    peer_index=_u32(attrs.get(IFLA_LINK)))

    def link_get(self, name: str | None = None, index: int = 0) -> Link | None:
        """The link by name or index, or None when there is no such link."""
        payload = _IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0)
        if name is not None:
            payload += attr_str(IFLA_IFNAME, name)
        try:
            replies = self.request(RTM_GETLINK, 0, payload, f"get link {name or index}")
        except OSError as exc:
            if exc.errno in (_errno.ENODEV, _errno.ENOENT):
                return None
            raise
        return self._link_from(replies[0][1]) if replies else None

    def link_list(self) -> list[Link]:
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0),
                               "list links")
        return [self._link_from(body) for kind, body in replies if kind == RTM_NEWLINK]

    def bridge_add(self, name: str, mtu: int = 0, vlan_filtering: bool = False) -> None:
        attrs = attr_str(IFLA_IFNAME, name)
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        data = [attr_u8(IFLA_BR_VLAN_FILTERING, 1)] if vlan_filtering else []
        attrs += nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"),
                        *([nested(IFLA_INFO_DATA, *data)] if data else []))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + attrs, f"add bridge {name}")

    def veth_add(self, name: str, peer: str, peer_netns_fd: int, mtu: int = 0,
                 peer_mac: str | None = None) -> None:
        """A veth pair: ``name`` here, ``peer`` created straight in the namespace of the fd."""
        peer_attrs = attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        if mtu:
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        if peer_mac:
            peer_attrs += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        peer_msg = _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + peer_attrs
        attrs = attr_str(IFLA_IFNAME, name)
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        attrs += nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                        nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + attrs, f"add veth {name} (peer {peer})")

    def link_set(self, index: int, *, up: bool | None = None, promisc: bool | None = None,
                 mtu: int = 0, master: int | None = None, mac: str | None = None,
                 what: str = "") -> None:
        flags = change = 0
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        attrs = b""
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        if master is not None:
            attrs += attr_u32(IFLA_MASTER, master)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        self.request(RTM_NEWLINK, 0, _IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, change) + attrs,
                     f"set link {what or index}")

    def link_del(self, index: int, what: str = "") -> None:
        self.request(RTM_DELLINK, 0, _IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0),
                     f"delete link {what or index}")

    # ---- bridge ports ---------------------------------------------------------

    def brport_set_hairpin(self, index: int, on: bool, what: str = "") -> None:
        attrs = nested(IFLA_PROTINFO, attr_u8(IFLA_BRPORT_MODE, int(on)))
        self.request(RTM_SETLINK, 0, _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0) + attrs,
                     f"set hairpin mode on {what or index}")

    def brport_hairpin(self, index: int) -> bool | None:
        """Hairpin mode of a bridge port, or None when the link is not a bridge port."""
        # A bridge-family dump lists the ports of every bridge with their IFLA_PROTINFO.
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(AF_BRIDGE, 0, 0, 0, 0),
                               "list bridge ports")
        for _kind, body in replies:
            if _IFINFOMSG.unpack_from(body)[2] != index:
                continue
            protinfo = parse_attrs(parse_attrs(body, _IFINFOMSG.size).get(IFLA_PROTINFO, b""))
            mode = protinfo.get(IFLA_BRPORT_MODE)
            return bool(mode[0]) if mode else False
        return None

    def brport_set_vlan(self, index: int, vid: int, what: str = "") -> None:
        """Make ``vid`` the port's untagged PVID (a port of a vlan_filtering bridge)."""
        info = struct.pack("=HH", BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED, vid)
        attrs = nested(IFLA_AF_SPEC, attr(IFLA_BRIDGE_FLAGS, struct.pack("=H", BRIDGE_FLAGS_MASTER)),
                       attr(IFLA_BRIDGE_VLAN_INFO, info))
        self.request(RTM_SETLINK, 0, _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0) + attrs,
                     f"set vlan {vid} on {what or index}")

    # ---- addresses ------------------------------------------------------------

    def _addr_msg(self, index: int, cidr: str, flags: int = 0):
        iface = ipnet.ip_interface(cidr)
        family = AF_INET if iface.version == 4 else AF_INET6
        packed = iface.ip.packed
        attrs = attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        if iface.version == 4 and iface.network.prefixlen < 31:
            attrs += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        if flags:
            attrs += attr_u32(IFA_FLAGS, flags)
        return _IFADDRMSG.pack(family, iface.network.prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE,
                               index) + attrs

    def addr_add(self, index: int, cidr: str, nodad: bool = False, what: str = "") -> None:
        flags = IFA_F_PERMANENT | (IFA_F_NODAD if nodad else 0)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, self._addr_msg(index, cidr, flags),
                     f"add address {cidr} on {what or index}")

    def addr_del(self, index: int, cidr: str, what: str = "") -> None:
        self.request(RTM_DELADDR, 0, self._addr_msg(index, cidr),
                     f"delete address {cidr} on {what or index}")

    def addr_list(self, index: int = 0, family: int = AF_UNSPEC) -> list[Address]:
        replies = self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(family, 0, 0, 0, 0),
                               "list addresses")
        out = []
        for kind, body in replies:
            fam, plen, flags8, scope, idx = _IFADDRMSG.unpack_from(body)
            if kind != RTM_NEWADDR or (index and idx != index):
                continue
            attrs = parse_attrs(body, _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            flags = _u32(attrs.get(IFA_FLAGS)) if IFA_FLAGS in attrs else flags8
            out.append(Address(idx, ipnet.Interface(ipnet.ip_address(raw), plen), scope, flags))
        return out

    # ---- routes ---------------------------------------------------------------

    def _route_msg(self, dst: str, gateway: str | None, oif: int) -> bytes:
        net = ipnet.ip_network(dst, strict=False)
        family = AF_INET if net.version == 4 else AF_INET6
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        attrs = attr_u32(RTA_TABLE, RT_TABLE_MAIN)
        if net.prefixlen:
            attrs += attr(RTA_DST, net.network_address.packed)
        if gateway:
            attrs += attr(RTA_GATEWAY, ipnet.ip_address(gateway).packed)
        if oif:
            attrs += attr_u32(RTA_OIF, oif)
        return _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope,
                           RTN_UNICAST, 0) + attrs

    def route_add(self, dst: str, gateway: str | None = None, oif: int = 0) -> None:
        via = f" via {gateway}" if gateway else ""
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, self._route_msg(dst, gateway, oif),
                     f"add route {dst}{via} dev {oif}")

    def route_del(self, dst: str, gateway: str | None = None, oif: int = 0) -> None:
        via = f" via {gateway}" if gateway else ""
        self.request(RTM_DELROUTE, 0, self._route_msg(dst, gateway, oif),
                     f"delete route {dst}{via} dev {oif}")

    def route_list(self, family: int = AF_UNSPEC) -> list[Route]:
        """Routes of the main table."""
        replies = self.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                               "list routes")
        out = []
        for kind, body in replies:
            fam, dst_len, _s, _t, table, proto, scope, rtype, _f = _RTMSG.unpack_from(body)
            attrs = parse_attrs(body, _RTMSG.size)
            table = _u32(attrs.get(RTA_TABLE)) or table
            if kind != RTM_NEWROUTE or table != RT_TABLE_MAIN or rtype != RTN_UNICAST:
                continue
            zero = b"\0" * (4 if fam == AF_INET else 16)
            dst = ipnet.ip_address(attrs.get(RTA_DST, zero))
            gw = attrs.get(RTA_GATEWAY)
            out.append(Route(ipnet.Network(dst.version, int(dst), dst_len),
                             ipnet.ip_address(gw) if gw else None,
                             _u32(attrs.get(RTA_OIF)), table, proto, scope))
        return out
