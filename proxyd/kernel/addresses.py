"""What the node's own interfaces say about its networks (read only)."""
from __future__ import annotations

import ipaddress


def _addresses(ipr):
    """(interface name, address, prefix length) of every address, loopback and link-local out."""
    links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    for msg in ipr.get_addr():
        address = msg.get_attr("IFA_ADDRESS")
        if not address:
            continue
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_link_local):
            yield links.get(msg["index"], ""), address, msg["prefixlen"]


def _with_ipr(fn, ipr):
    if ipr is not None:
        return fn(ipr)
    from pyroute2 import IPRoute     # ~130 ms to import: only once a controller needs it
    with IPRoute() as own:
        return fn(own)


def local_addresses(ipr=None, skip_device: str = "kube-dummy-if") -> list[str]:
    """The node's own addresses (not the Service VIPs the proxy puts on its dummy device)."""
    return _with_ipr(lambda r: sorted({a for dev, a, _ in _addresses(r) if dev != skip_device}),
                     ipr)


def connected_subnets(ipr=None) -> list[str]:
    """Every subnet this network namespace has an address in (loopback and
    link-local left out): a BGP next hop inside one is reached without a tunnel."""
    return _with_ipr(lambda r: sorted({
        str(ipaddress.ip_network(f"{a}/{n}", strict=False)) for dev, a, n in _addresses(r)
        if dev != "kube-dummy-if"}), ipr)
