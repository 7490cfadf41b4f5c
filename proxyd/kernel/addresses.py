"""What the node's own interfaces say about its networks (read only)."""
from __future__ import annotations

import ipaddress


def connected_subnets(ipr=None) -> list[str]:
    """Every subnet this network namespace has an address in (loopback and
    link-local left out): a BGP next hop inside one is reached without a tunnel."""
    if ipr is None:
        from pyroute2 import IPRoute     # ~130 ms to import: only once routing runs
        with IPRoute() as own:
            return connected_subnets(own)
    out = set()
    for msg in ipr.get_addr():
        address, prefixlen = msg.get_attr("IFA_ADDRESS"), msg["prefixlen"]
        if not address:
            continue
        net = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
        if not (net.is_loopback or net.is_link_local):
            out.add(str(net))
    return sorted(out)
