"""IPVS's vocabulary for the applier (proxyd/kernel/ipvs.py): keys, checks, requests.

A desired table is ``VirtualService`` values (proxyd/kernel/state.py) by
canonical key; ``desired_table`` checks them as the kernel would refuse them,
and ``service_attrs``/``dest_attrs`` turn them into the attributes of
ipvs_netlink's requests.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from proxyd.kernel.state import Destination, VirtualService

PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
# IP_VS_CONN_F_MASQ / _TUNNEL / _DROUTE
FORWARD = {"masq": 0, "tunnel": 2, "route": 3}
FORWARD_NAMES = {v: k for k, v in FORWARD.items()}
F_PERSISTENT = 0x1
F_HASHED = 0x2
# Flag names as kube-router's service.schedflags annotation spells them.
FLAGS = {"hashed": F_HASHED, "one-packet": 0x4, "flag-1": 0x8, "flag-2": 0x10, "flag-3": 0x20}
FLAGS_MASK = 0xFFFF

Key = tuple[str, str, int]      # (protocol, canonical address, port)


class IPVSSyncError(RuntimeError):
    """Some virtual services could not be applied; the rest were."""


@dataclass(frozen=True)
class KernelService:
    scheduler: str
    flags: int                     # without F_HASHED
    timeout: int


@dataclass(frozen=True)
class KernelDest:
    weight: int
    forward: int
    connections: int               # active + inactive


def service_name(key: Key) -> str:
    protocol, address, port = key
    return f"{protocol} {endpoint(address, port)}"


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def canonical(address: str) -> str:
    """The address as the kernel prints it (ipaddress costs ~10x inet_pton per call, and a
    table holds thousands)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, address))
    except OSError:
        raise ValueError(f"{address!r} is not an IP address") from None


def wanted_flags(vs: VirtualService) -> int:
    unknown = set(vs.flags) - FLAGS.keys()
    if unknown:
        raise ValueError(f"{vs.protocol} {endpoint(vs.address, vs.port)}: unknown IPVS "
                         f"flags {sorted(unknown)} (known: {sorted(FLAGS)})")
    bits = sum(FLAGS[f] for f in vs.flags) | (F_PERSISTENT if vs.persistent else 0)
    return bits & ~F_HASHED


def check(key: Key, vs: VirtualService) -> None:
    name = service_name(key)
    if vs.protocol not in PROTOCOLS:
        raise ValueError(f"{name}: protocol must be one of {sorted(PROTOCOLS)}")
    if vs.persistent < 0:
        raise ValueError(f"{name}: persistence of {vs.persistent}s")
    family = ":" in canonical(vs.address)
    for d in vs.destinations:
        if d.forward not in FORWARD:
            raise ValueError(f"{name}: destination {endpoint(d.address, d.port)}: forward "
                             f"must be one of {sorted(FORWARD)}")
        if (":" in canonical(d.address)) != family and d.forward != "tunnel":
            raise ValueError(f"{name}: destination {d.address} is of another family "
                             f"(IPVS forwards across families only by tunnel)")
    wanted_flags(vs)
    wanted_dests(key, vs)


def desired_table(desired: Iterable[VirtualService],
                  owned: Callable[[str, str, int], bool]) -> dict[Key, VirtualService]:
    """Services by canonical key; two different services for one key, or a desired service
    the controller would not recognise as its own (it would never be removed), are a bug."""
    out: dict[Key, VirtualService] = {}
    for vs in desired:
        key = (vs.protocol, canonical(vs.address), vs.port)
        check(key, vs)
        if not owned(*key):
            raise ValueError(f"{service_name(key)} is desired but owned() says it is not ours: "
                             f"it would never be removed")
        if out.get(key, vs) != vs:
            raise ValueError(f"two different services for {service_name(key)}")
        out[key] = vs
    return out


def wanted_dests(key: Key, vs: VirtualService) -> dict[tuple[str, int], Destination]:
    out: dict[tuple[str, int], Destination] = {}
    for d in vs.destinations:
        dk = (canonical(d.address), d.port)
        if out.get(dk, d) != d:
            raise ValueError(f"{service_name(key)}: two different destinations "
                             f"{endpoint(*dk)}")
        out[dk] = d
    return out


def describe(s: KernelService) -> str:
    flags = [n for n, bit in sorted(FLAGS.items()) if s.flags & bit]
    text = s.scheduler
    if s.flags & F_PERSISTENT:
        text += f" persistent {s.timeout}s"
    return text + (f" flags {','.join(flags)}" if flags else "")


def service_attrs(key: Key, settings: KernelService | None = None) -> dict:
    """The service's key, or its full entry with ``settings`` (add and set need one), as
    ipvs_netlink's attributes."""
    protocol, address, port = key
    v6 = ":" in address
    attrs = {"af": socket.AF_INET6 if v6 else socket.AF_INET, "protocol": PROTOCOLS[protocol],
             "addr": address, "port": port}
    if settings is not None:
        attrs.update(sched_name=settings.scheduler, flags=(settings.flags, FLAGS_MASK),
                     timeout=settings.timeout, netmask=128 if v6 else 0xFFFFFFFF)
    return attrs


def dest_attrs(dk: tuple[str, int], d: Destination | None = None) -> dict:
    """A destination's key, or its full entry with ``d`` (add and set need one)."""
    address, port = dk
    attrs = {"addr": address, "port": port,
             "addr_family": socket.AF_INET6 if ":" in address else socket.AF_INET}
    if d is not None:
        attrs.update(fwd_method=FORWARD[d.forward], weight=d.weight, u_threshold=0,
                     l_threshold=0)
    return attrs
