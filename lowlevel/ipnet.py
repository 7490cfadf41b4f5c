"""IPv4/IPv6 addresses, networks and interfaces: the part of ``ipaddress`` the plugins use.

A plugin process lives for one pod ADD or DEL, and ``ipaddress`` (with the
functools and collections it pulls in) is a noticeable share of its start-up.
Parsing is glibc's inet_pton, which, like ``ipaddress`` and Go, rejects
leading zeros in IPv4 octets; unlike ``ipaddress`` it rejects IPv6 zones
("fe80::1%eth0"), as Go's ParseIP does. Text forms are those of
``ipaddress``'s str(): RFC 5952 compression, IPv4-mapped addresses in hex.
Errors are ValueErrors with ``ipaddress``'s messages.
"""
from __future__ import annotations

# _socket, not socket: socket imports enum.
import _socket

_BITS = {4: 32, 6: 128}


class Address:
    """One address; ``int()`` gives its value, ``+ n`` the n-th next address."""

    __slots__ = ("version", "_ip")

    def __init__(self, version: int, value: int):
        if value < 0 or value >> _BITS[version]:
            raise ValueError(f"{value} is not an IPv{version} address value")
        self.version = version
        self._ip = value

    @property
    def max_prefixlen(self) -> int:
        return _BITS[self.version]

    @property
    def packed(self) -> bytes:
        return self._ip.to_bytes(_BITS[self.version] // 8, "big")

    @property
    def is_unspecified(self) -> bool:
        return self._ip == 0

    @property
    def ipv4_mapped(self) -> Address | None:
        """The IPv4 address inside ::ffff:a.b.c.d, else None."""
        if self.version == 6 and self._ip >> 32 == 0xFFFF:
            return Address(4, self._ip & 0xFFFFFFFF)
        return None

    def __int__(self) -> int:
        return self._ip

    def __add__(self, n: int) -> Address:
        return Address(self.version, self._ip + n)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Address)
                and self.version == other.version and self._ip == other._ip)

    def __lt__(self, other: Address) -> bool:
        return (self.version, self._ip) < (other.version, other._ip)

    def __hash__(self) -> int:
        return hash((self.version, self._ip))

    def __str__(self) -> str:
        if self.version == 4:
            return ".".join(map(str, self.packed))
        return _v6_text(self._ip)

    def __repr__(self) -> str:
        return f"IPv{self.version}Address('{self}')"


class Network:
    """``network_address``/``prefixlen``; host bits are always zero."""

    __slots__ = ("version", "prefixlen", "_ip")

    def __init__(self, version: int, value: int, prefixlen: int):
        self.version = version
        self.prefixlen = prefixlen
        self._ip = value & _mask(version, prefixlen)

    @property
    def max_prefixlen(self) -> int:
        return _BITS[self.version]

    @property
    def network_address(self) -> Address:
        return Address(self.version, self._ip)

    @property
    def broadcast_address(self) -> Address:
        return Address(self.version, self._ip | _hostmask(self.version, self.prefixlen))

    @property
    def netmask(self) -> Address:
        return Address(self.version, _mask(self.version, self.prefixlen))

    @property
    def with_prefixlen(self) -> str:
        return str(self)

    def __contains__(self, addr: Address) -> bool:
        return (addr.version == self.version
                and int(addr) & _mask(self.version, self.prefixlen) == self._ip)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Network) and self.version == other.version
                and self._ip == other._ip and self.prefixlen == other.prefixlen)

    def __hash__(self) -> int:
        return hash((self.version, self._ip, self.prefixlen))

    def __str__(self) -> str:
        return f"{self.network_address}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"IPv{self.version}Network('{self}')"


class Interface:
    """An address with the prefix of its network ("10.0.0.2/24")."""

    __slots__ = ("ip", "network")

    def __init__(self, ip: Address, prefixlen: int):
        self.ip = ip
        self.network = Network(ip.version, int(ip), prefixlen)

    @property
    def version(self) -> int:
        return self.ip.version

    @property
    def max_prefixlen(self) -> int:
        return _BITS[self.ip.version]

    @property
    def with_prefixlen(self) -> str:
        return str(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Interface) and self.ip == other.ip and self.network == other.network

    def __hash__(self) -> int:
        return hash((self.ip, self.network.prefixlen))

    def __str__(self) -> str:
        return f"{self.ip}/{self.network.prefixlen}"

    def __repr__(self) -> str:
        return f"IPv{self.version}Interface('{self}')"


def _mask(version: int, prefixlen: int) -> int:
    bits = _BITS[version]
    return ((1 << prefixlen) - 1) << (bits - prefixlen)


def _hostmask(version: int, prefixlen: int) -> int:
    return (1 << (_BITS[version] - prefixlen)) - 1


def _v6_text(value: int) -> str:
    """RFC 5952 text: hextets without leading zeros, the first longest run of two or
    more zero hextets as "::"."""
    hextets = [format(value >> shift & 0xFFFF, "x") for shift in range(112, -1, -16)]
    best_start, best_len, start = -1, 0, -1
    for i, hextet in enumerate(hextets):
        if hextet != "0":
            start = -1
            continue
        if start < 0:
            start = i
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    if best_len > 1:
        end = best_start + best_len
        hextets[best_start:end] = [""]
        if end == 8:
            hextets.append("")
        if best_start == 0:
            hextets.insert(0, "")
    return ":".join(hextets)


def _parse(text: str) -> Address | None:
    version = 6 if ":" in text else 4
    try:
        packed = _socket.inet_pton(_socket.AF_INET6 if version == 6 else _socket.AF_INET, text)
    except (OSError, ValueError):       # ValueError: a NUL or a lone surrogate in the text
        return None
    return Address(version, int.from_bytes(packed, "big"))


def _parse_prefix(version: int, text: str) -> int | None:
    if text.isascii() and text.isdigit():
        prefixlen = int(text)
        return prefixlen if prefixlen <= _BITS[version] else None
    if version == 6:
        return None
    # IPv4 also takes a netmask ("255.255.255.0") or a hostmask ("0.0.0.255").
    mask = _parse(text)
    if mask is None or mask.version != 4:
        return None
    for value in (int(mask), int(mask) ^ 0xFFFFFFFF):
        ones = bin(value).count("1")
        if value == _mask(4, ones):
            return ones
    return None


def _split(text, kind: str) -> tuple[Address, int]:
    if isinstance(text, str):
        addr_text, slash, prefix_text = text.partition("/")
        addr = _parse(addr_text) if "/" not in prefix_text else None
        if addr is not None:
            prefixlen = _parse_prefix(addr.version, prefix_text) if slash else addr.max_prefixlen
            if prefixlen is not None:
                return addr, prefixlen
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 {kind}")


def ip_address(value: str | bytes) -> Address:
    """An address from its text, or from its 4 or 16 packed bytes."""
    if isinstance(value, bytes) and len(value) in (4, 16):
        return Address(4 if len(value) == 4 else 6, int.from_bytes(value, "big"))
    addr = _parse(value) if isinstance(value, str) else None
    if addr is None:
        raise ValueError(f"{value!r} does not appear to be an IPv4 or IPv6 address")
    return addr


def ip_network(text: str, strict: bool = True) -> Network:
    """"10.0.0.0/24"; with ``strict`` set, host bits are an error, else they are dropped."""
    addr, prefixlen = _split(text, "network")
    net = Network(addr.version, int(addr), prefixlen)
    if strict and net._ip != int(addr):
        raise ValueError(f"{addr}/{prefixlen} has host bits set")
    return net


def ip_interface(text: str) -> Interface:
    """"10.0.0.2/24": an address and the prefix of its network."""
    return Interface(*_split(text, "interface"))
