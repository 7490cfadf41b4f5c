"""Which IPVS virtual services are the service proxy's: a plain value, built from the flags.

Ours: a virtual service on an address inside the service CIDRs, the external or
LoadBalancer IP ranges (not inside --excluded-cidrs), or on one of this node's
addresses at a port of the NodePort range. Everything else in IPVS belongs to
someone else and is never touched. The controller and --cleanup-config build
the same value, so both agree on what is ours.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class IPVSOwnership:
    ranges: tuple = ()
    excluded: tuple = ()
    node_ports: tuple[int, int] = (30000, 32767)
    node_addresses: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config, node_addresses: Iterable[str] = ()) -> "IPVSOwnership":
        return cls(tuple(config.service_cluster_ip_range) + tuple(config.service_external_ip_range)
                   + tuple(config.loadbalancer_ip_range), tuple(config.excluded_cidrs),
                   tuple(config.service_node_port_range), frozenset(node_addresses))

    def with_addresses(self, node_addresses: Iterable[str]) -> "IPVSOwnership":
        return dataclasses.replace(self, node_addresses=frozenset(node_addresses))

    def owns(self, protocol: str, address: str, port: int) -> bool:
        ip = ipaddress.ip_address(address)
        if any(ip in net for net in self.excluded if net.version == ip.version):
            return False
        if any(ip in net for net in self.ranges if net.version == ip.version):
            return True
        return (address in self.node_addresses
                and self.node_ports[0] <= port <= self.node_ports[1])
