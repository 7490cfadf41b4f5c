"""What kube-router-cni reads from the node it runs on, injectable for tests.

Auto-MTU follows kube-router: the MTU of the interface that carries the node's
default route (the pod traffic leaves through it).
"""
from __future__ import annotations

import dataclasses
import os
import socket
from typing import Callable, Mapping


def default_route_interface_v4(route_text: str) -> str | None:
    """The default route's interface from /proc/net/route (lowest metric wins)."""
    best: tuple[int, str] | None = None
    for line in route_text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
            continue
        if not int(f[3], 16) & 0x1:  # RTF_UP
            continue
        metric = int(f[6])
        if best is None or metric < best[0]:
            best = (metric, f[0])
    return best[1] if best else None


def default_route_interface_v6(route_text: str) -> str | None:
    """The default route's interface from /proc/net/ipv6_route (lowest metric wins)."""
    best: tuple[int, str] | None = None
    for line in route_text.splitlines():
        f = line.split()
        if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00" or f[9] == "lo":
            continue
        # Unreachable/blackhole defaults (RTF_REJECT) sit on lo or carry no gateway.
        if int(f[8], 16) & 0x0200:
            continue
        metric = int(f[5], 16)
        if best is None or metric < best[0]:
            best = (metric, f[9])
    return best[1] if best else None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def system_default_route_interface() -> str | None:
    return (default_route_interface_v4(_read("/proc/net/route"))
            or default_route_interface_v6(_read("/proc/net/ipv6_route")))


def system_interface_mtu(ifname: str) -> int:
    return int(_read(f"/sys/class/net/{ifname}/mtu").strip())


@dataclasses.dataclass(frozen=True)
class Host:
    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: os.environ)
    hostname: Callable[[], str] = socket.gethostname
    default_route_interface: Callable[[], str | None] = system_default_route_interface
    interface_mtu: Callable[[str], int] = system_interface_mtu


def auto_mtu(host: Host) -> tuple[int | None, str]:
    """(MTU, how it was found) of the default-route interface; (None, why not) otherwise."""
    ifname = host.default_route_interface()
    if not ifname:
        return None, "auto: no default route, mtu left to the plugin"
    try:
        return host.interface_mtu(ifname), f"auto: mtu of {ifname} (default route)"
    except (OSError, ValueError):
        return None, f"auto: cannot read the mtu of {ifname}, mtu left to the plugin"
