"""Pod CIDRs as host-local accepts them: a network address, room for hosts, no overlaps."""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_subnet(text: object) -> Network:
    """A subnet host-local can allocate from, or ValueError saying how to fix it."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a CIDR string (write it like 10.244.1.0/24)")
    if "/" not in text:
        raise ValueError(f"{text!r} has no prefix length (write it like 10.244.1.0/24)")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid CIDR (write it like 10.244.1.0/24 "
                         "or fd00:10:244:1::/64)") from None
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise ValueError(f"{text!r} has host bits set: the network address is {net} "
                         "(host-local rejects it)")
    # host-local needs a network, a gateway and at least one address to hand out.
    if net.prefixlen > net.max_prefixlen - 2:
        raise ValueError(f"{text!r} is too small to allocate pod addresses from "
                         f"(use a prefix of /{net.max_prefixlen - 2} or shorter)")
    return net


def parse_ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an IP address string")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid IP address") from None


def find_overlap(nets: Iterable[Network]) -> tuple[int, int] | None:
    """Indices (i, j), i < j, of the first two networks that overlap, if any."""
    seen: list[Network] = []
    for j, net in enumerate(nets):
        for i, other in enumerate(seen):
            if other.version == net.version and other.overlaps(net):
                return i, j
        seen.append(net)
    return None


def parse_pod_cidrs(texts: Iterable[str]) -> list[str]:
    """Validated, de-duplicated pod CIDRs in their canonical spelling, input order kept."""
    nets: list[Network] = []
    for text in texts:
        text = text.strip()
        try:
            net = parse_subnet(text)
        except ValueError as exc:
            raise ValueError(f"pod CIDR {exc}") from None
        if net not in nets:
            nets.append(net)
    overlap = find_overlap(nets)
    if overlap:
        i, j = overlap
        raise ValueError(f"pod CIDRs {nets[i]} and {nets[j]} overlap: give each range once")
    return [str(n) for n in nets]
