"""Address ranges and the round-robin choice of the next free address (pure).

Addresses are plain ints inside one family; ``Range`` carries the family.
The walk order is the reference host-local plugin's, so a node that switches
between the two plugins keeps handing out addresses in the same sequence:
start just after ``last_reserved_ip.<n>``, go to the end of that range, on
through the following ranges of the set, wrap around, and stop after every
address has been offered once. The gateway of a range is never offered.
"""
from __future__ import annotations

# _collections_abc, not collections.abc: os has already loaded the former, while
# the latter imports the whole collections package.
from _collections_abc import Container, Iterator

from cni.record import Record
from lowlevel import ipnet

_MAX_BITS = {4: 32, 6: 128}


class Range(Record):
    """One allocation range: ``start``..``end`` (inclusive) inside ``subnet``."""

    __slots__ = ("version", "network", "prefixlen", "start", "end", "gateway")

    def contains(self, version: int, addr: int) -> bool:
        return version == self.version and self.start <= addr <= self.end

    def overlaps(self, other: "Range") -> bool:
        return (self.version == other.version
                and self.start <= other.end and other.start <= self.end)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{format_ip(self.version, self.start)}-{format_ip(self.version, self.end)}"

    def __repr__(self) -> str:
        return f"Range({self})"


def build_range(subnet: str, range_start: str | None = None, range_end: str | None = None,
                gateway: str | None = None) -> Range:
    """A range with the reference defaults; raises ValueError naming the problem.

    Defaults: start = network + 1, end = broadcast - 1 for IPv4 (the last
    address for IPv6, which has no broadcast), gateway = network + 1.
    """
    net = parse_cidr(subnet)
    bits = _MAX_BITS[net.version]
    # A /31 or /32 (/127, /128) has no address left once the network address
    # and the gateway are set aside: the reference refuses them the same way.
    if net.prefixlen > bits - 2:
        raise ValueError(f"network {net} too small to allocate from")
    first, last = int(net.network_address), int(net.broadcast_address)
    version = net.version
    gw = first + 1 if gateway is None else _addr_of_family(gateway, version, "gateway")
    start = first + 1 if range_start is None else _addr_of_family(range_start, version, "rangeStart")
    end = (last - 1 if version == 4 else last) if range_end is None \
        else _addr_of_family(range_end, version, "rangeEnd")
    r = Range(version, first, net.prefixlen, start, end, gw)
    for key, value in (("rangeStart", start), ("rangeEnd", end)):
        if not first <= value <= last:
            raise ValueError(f"{key} {format_ip(version, value)} not in network {net}")
    if start > end:
        raise ValueError(f"rangeStart {format_ip(version, start)} is after rangeEnd "
                         f"{format_ip(version, end)}")
    return r


def parse_cidr(text: str) -> ipnet.Network:
    """A network in "address/prefix" form whose host bits are zero."""
    if not isinstance(text, str) or "/" not in text or not text.rsplit("/", 1)[1].isdigit():
        raise ValueError("is not a CIDR")
    try:
        net = ipnet.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("is not a CIDR") from None
    if int(net.network_address) != parse_ip(text.rsplit("/", 1)[0])[1]:
        raise ValueError(f"has host bits set (the network is {net})")
    return net


def _parse_addr(text: str) -> tuple[int, int]:
    addr = ipnet.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def parse_ip(text: str) -> tuple[int, int]:
    """(version, int) of an address; IPv4-mapped IPv6 counts as IPv4, as in Go."""
    if not isinstance(text, str):
        raise ValueError("is not an IP address")
    try:
        return _parse_addr(text)
    except ValueError:
        raise ValueError("is not an IP address") from None


def _addr_of_family(text: str, version: int, key: str) -> int:
    v, addr = parse_ip(text)
    if v != version:
        raise ValueError(f"{key} {text} is not an IPv{version} address")
    return addr


def format_ip(version: int, addr: int) -> str:
    return str(ipnet.Address(version, addr))


def range_set_str(range_set: list[Range]) -> str:
    return ",".join(str(r) for r in range_set)


def range_for(range_set: list[Range], version: int, addr: int) -> Range | None:
    for r in range_set:
        if r.contains(version, addr):
            return r
    return None


def iter_candidates(range_set: list[Range], last_reserved: int | None) -> Iterator[tuple[int, Range]]:
    """Every allocatable address of the set once, starting after ``last_reserved``."""
    n = len(range_set)
    idx, pos = 0, range_set[0].start
    if last_reserved is not None:
        for i, r in enumerate(range_set):
            if r.start <= last_reserved <= r.end:
                if last_reserved < r.end:
                    idx, pos = i, last_reserved + 1
                else:
                    idx = (i + 1) % n
                    pos = range_set[idx].start
                break
    for k in range(n + 1):
        r = range_set[(idx + k) % n]
        lo = pos if k == 0 else r.start
        hi = pos - 1 if k == n else r.end
        for addr in range(lo, hi + 1):
            if addr != r.gateway:
                yield addr, r


def next_free(range_set: list[Range], taken: Container[int],
              last_reserved: int | None) -> tuple[int, Range] | None:
    """The first candidate not in ``taken`` (ints of the set's family), or None."""
    for addr, r in iter_candidates(range_set, last_reserved):
        if addr not in taken:
            return addr, r
    return None


def free_count(range_set: list[Range], taken: set[int]) -> int:
    """How many addresses of the set are still free; gateways do not count."""
    total = 0
    for r in range_set:
        gateway_inside = r.gateway is not None and r.start <= r.gateway <= r.end
        used = sum(1 for a in taken if r.start <= a <= r.end and a != r.gateway)
        total += r.size - gateway_inside - used
    return total
