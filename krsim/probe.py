"""Probes: connect from one namespace to an address and port, report who answered.

Each probe runs in a worker thread that has entered the source namespace
(setns is per thread), so hundreds of probes run concurrently from one process.
"""
from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lowlevel import netns


@dataclass
class Probe:
    source: str               # a label, e.g. "x/a"
    source_netns: str         # /run/netns/... path
    target: str               # a label, e.g. "y/b" or "svc/y/web"
    address: str              # the IP the probe connects to
    port: int
    protocol: str = "TCP"
    expect: str | None = None  # "allow" | "deny" | None
    count: int = 1
    results: list = field(default_factory=list)     # "allow"/"deny" per try
    answered_by: list = field(default_factory=list)  # the responder's name per try
    skip_reason: str | None = None                   # set: not sent, e.g. no SCTP here

    @property
    def result(self) -> str:
        if self.skip_reason:
            return "skip"
        return "allow" if self.results and all(r == "allow" for r in self.results) else "deny"

    @property
    def ok(self) -> bool:
        return self.skip_reason is not None or self.expect is None or self.expect == self.result


def sctp_available() -> bool:
    """Whether this kernel speaks SCTP (it is often a module, sometimes compiled out)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _once(address: str, port: int, protocol: str, timeout: float) -> str | None:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
    proto = socket.IPPROTO_SCTP if protocol == "SCTP" else 0
    with socket.socket(family, kind, proto) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            if protocol == "UDP":
                s.send(b"?")
            data = s.recv(256)
        except OSError:
            return None
    name = data.decode(errors="replace").strip()
    return name or None


def _run_probe(probe: Probe, timeout: float) -> Probe:
    if probe.skip_reason:
        return probe
    netns.enter(probe.source_netns)
    for _ in range(probe.count):
        who = _once(probe.address, probe.port, probe.protocol, timeout)
        probe.results.append("allow" if who else "deny")
        probe.answered_by.append(who)
    return probe


def run_probes(probes: list[Probe], timeout: float = 1.0, workers: int = 64) -> list[Probe]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _run_probe(p, timeout), probes))
