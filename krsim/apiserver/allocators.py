"""ClusterIP, NodePort and node pod-CIDR allocators (deterministic: lowest free first)."""
from __future__ import annotations

import ipaddress


class Exhausted(Exception):
    pass


class Taken(Exception):
    pass


class IPAllocator:
    """ClusterIPs of one family from --service-cluster-ip-range."""

    def __init__(self, cidr: str):
        self.network = ipaddress.ip_network(cidr)
        self.family = "IPv4" if self.network.version == 4 else "IPv6"
        self._used: set[ipaddress._BaseAddress] = set()

    def first(self) -> str:
        """The range's first address: the ``kubernetes`` Service's ClusterIP."""
        return str(self.network.network_address + 1)

    def reserve(self, ip: str) -> None:
        addr = ipaddress.ip_address(ip)
        if addr not in self.network or addr in (self.network.network_address,
                                                self.network.broadcast_address):
            raise ValueError(f"the provided IP ({ip}) is not in the valid range. The range of "
                             f"valid IPs is {self.network}")
        if addr in self._used:
            raise Taken(f"provided IP is already allocated")
        self._used.add(addr)

    def allocate(self) -> str:
        # .1 is the kubernetes Service's, even while that Service is being recreated.
        last = min(self.network.num_addresses - 2, 1 << 20)
        for offset in range(2, last + 1):
            addr = self.network.network_address + offset
            if addr not in self._used:
                self._used.add(addr)
                return str(addr)
        raise Exhausted(f"range is full: {self.network}")

    def release(self, ip: str) -> None:
        self._used.discard(ipaddress.ip_address(ip))


class PortAllocator:
    """NodePorts from --service-node-port-range."""

    def __init__(self, low: int = 30000, high: int = 32767):
        self.low, self.high = low, high
        self._used: set[int] = set()

    def reserve(self, port: int) -> None:
        if not self.low <= port <= self.high:
            raise ValueError(f"provided port is not in the valid range. The range of valid ports "
                             f"is {self.low}-{self.high}")
        if port in self._used:
            raise Taken("provided port is already allocated")
        self._used.add(port)

    def allocate(self) -> int:
        for port in range(self.low, self.high + 1):
            if port not in self._used:
                self._used.add(port)
                return port
        raise Exhausted(f"range is full: {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._used.discard(port)


class CIDRAllocator:
    """Per-node pod CIDRs carved from one --cluster-cidr (kube-controller-manager's range allocator)."""

    def __init__(self, cluster_cidr: str, mask: int | None = None):
        self.network = ipaddress.ip_network(cluster_cidr)
        self.mask = mask or (24 if self.network.version == 4 else 64)
        if self.mask < self.network.prefixlen:
            raise ValueError(f"node mask /{self.mask} is larger than --cluster-cidr {cluster_cidr}")
        self._used: set[ipaddress._BaseNetwork] = set()

    def reserve(self, cidr: str) -> None:
        net = ipaddress.ip_network(cidr)
        if net.version == self.network.version and net.subnet_of(self.network):
            self._used.add(net)

    def allocate(self) -> str:
        count = 1 << (self.mask - self.network.prefixlen)
        step = 1 << (self.network.max_prefixlen - self.mask)
        for index in range(count):
            net = ipaddress.ip_network((int(self.network.network_address) + index * step,
                                        self.mask))
            if net not in self._used:
                self._used.add(net)
                return str(net)
        raise Exhausted(f"no remaining CIDRs in {self.network}")

    def release(self, cidr: str) -> None:
        self._used.discard(ipaddress.ip_network(cidr))
