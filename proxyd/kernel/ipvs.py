"""The service proxy's one writer of IPVS virtual services (pyroute2, generic netlink).

The proxy controller hands in the node's whole desired IPVS table as
``VirtualService`` values (proxyd/kernel/state.py) each sync. The applier
dumps the kernel's table, changes only the difference and touches only
services the controller's
``owned(protocol, address, port)`` claims: a service anyone else made (an
operator's ``ipvsadm -A``, another load balancer, a fwmark service) is never
changed, and IPVS is never flushed.

- A service whose scheduler, persistence or flags differ is edited in place
  (IPVS_CMD_SET_SERVICE): its destinations and their connections stay.
- Destinations are diffed by (address, port): an unchanged one is not
  touched, a changed weight or forwarding method is edited in place.
- With ``graceful`` (seconds), a destination no longer wanted first goes to
  weight 0 (no new connections) and is deleted once it holds no connections
  or the period has passed -- kube-router's --ipvs-graceful-termination.

Measured on Linux 6.1 with pyroute2 0.9.7 (tests/kernel/test_ipvs_applier_kernel.py):
- ``IPVSService`` takes the scheduler as ``sched_name`` (``sched`` is
  ignored and the service gets wlc); ``IPVSDest`` defaults to fwd_method 3
  (direct routing); the 'update' command sends a DELETE: use 'set'.
- ``IPVSService.from_message`` returns the class defaults for flags and
  timeout, not the kernel's values: dumps are read attribute by attribute.
- The kernel sets IP_VS_SVC_F_HASHED on every service in its table, so
  "hashed" is always there and is left out when comparing.
- An IPv6 service needs IPVS_SVC_ATTR_NETMASK holding the prefix length as
  a host-order u32 (ipvsadm sends 128); without it the kernel says EINVAL.
  pyroute2 encodes the attribute as an IPv4 address, so 128 goes in as the
  address whose bytes are that u32.
- An IPv4 real server must be a unicast or local address (inet_addr_type
  on the local table): a multicast or broadcast one is EINVAL, and so is
  every one in a namespace that has no IPv4 local table yet (not even lo up).
- pyroute2 0.9.7 opens the generic netlink socket per thread; a handle made
  on one thread and used on another dumps fine but every change comes back
  ECONNRESET. The applier therefore makes its own handle on the thread of
  its first sync (the runner's), unless one is injected.
- An unknown scheduler is ENOENT (its ip_vs_<name> module cannot be found).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from pyroute2.netlink.exceptions import NetlinkError

from proxyd.kernel.state import Destination, VirtualService

log = logging.getLogger(__name__)

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
V6_NETMASK = socket.inet_ntoa(struct.pack("=I", 128))   # see the module's notes

Key = tuple[str, str, int]      # (protocol, canonical address, port)


class IPVSSyncError(RuntimeError):
    """Some virtual services could not be applied; the rest were."""


@dataclass(frozen=True)
class _KernelService:
    scheduler: str
    flags: int                     # without F_HASHED
    timeout: int


@dataclass(frozen=True)
class _KernelDest:
    weight: int
    forward: int
    connections: int               # active + inactive


def service_name(key: Key) -> str:
    protocol, address, port = key
    return f"{protocol} {_endpoint(address, port)}"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _canonical(address: str) -> str:
    return ipaddress.ip_address(address).compressed


def _wanted_flags(vs: VirtualService) -> int:
    unknown = set(vs.flags) - FLAGS.keys()
    if unknown:
        raise ValueError(f"{vs.protocol} {_endpoint(vs.address, vs.port)}: unknown IPVS "
                         f"flags {sorted(unknown)} (known: {sorted(FLAGS)})")
    bits = sum(FLAGS[f] for f in vs.flags) | (F_PERSISTENT if vs.persistent else 0)
    return bits & ~F_HASHED


def _check(key: Key, vs: VirtualService) -> None:
    name = service_name(key)
    if vs.protocol not in PROTOCOLS:
        raise ValueError(f"{name}: protocol must be one of {sorted(PROTOCOLS)}")
    if vs.persistent < 0:
        raise ValueError(f"{name}: persistence of {vs.persistent}s")
    family = ipaddress.ip_address(vs.address).version
    for d in vs.destinations:
        if d.forward not in FORWARD:
            raise ValueError(f"{name}: destination {_endpoint(d.address, d.port)}: forward "
                             f"must be one of {sorted(FORWARD)}")
        if ipaddress.ip_address(d.address).version != family and d.forward != "tunnel":
            raise ValueError(f"{name}: destination {d.address} is of another family "
                             f"(IPVS forwards across families only by tunnel)")
    _wanted_flags(vs)
    _wanted_dests(key, vs)


def desired_table(desired: Iterable[VirtualService],
                  owned: Callable[[str, str, int], bool]) -> dict[Key, VirtualService]:
    """Services by canonical key; two different services for one key, or a desired service
    the controller would not recognise as its own (it would never be removed), are a bug."""
    out: dict[Key, VirtualService] = {}
    for vs in desired:
        key = (vs.protocol, _canonical(vs.address), vs.port)
        _check(key, vs)
        if not owned(*key):
            raise ValueError(f"{service_name(key)} is desired but owned() says it is not ours: "
                             f"it would never be removed")
        if out.get(key, vs) != vs:
            raise ValueError(f"two different services for {service_name(key)}")
        out[key] = vs
    return out


def _wanted_dests(key: Key, vs: VirtualService) -> dict[tuple[str, int], Destination]:
    out: dict[tuple[str, int], Destination] = {}
    for d in vs.destinations:
        dk = (_canonical(d.address), d.port)
        if out.get(dk, d) != d:
            raise ValueError(f"{service_name(key)}: two different destinations "
                             f"{_endpoint(*dk)}")
        out[dk] = d
    return out


class IPVSApplier:
    def __init__(self, owned: Callable[[str, str, int], bool], *, ipvs=None,
                 graceful: float | None = None, clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger = log):
        """owned(protocol, address, port): whether a virtual service in the kernel is ours.
        graceful: seconds a removed destination may drain at weight 0 before it is deleted."""
        self._handle = ipvs
        self._owned = owned
        self._graceful = graceful
        self._clock = clock
        self._log = log
        self._draining: dict[tuple[Key, tuple[str, int]], float] = {}

    @property
    def _ipvs(self):
        if self._handle is None:
            from pyroute2 import IPVS
            self._handle = IPVS()
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    # ---- reading the kernel -----------------------------------------------

    def _services(self) -> dict[Key, _KernelService]:
        """Every address-based service in the kernel (fwmark ones have no key and are
        never ours)."""
        found = {}
        for msg in self._ipvs.service("dump"):
            attrs = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
            get = attrs.get_attr
            protocol = PROTOCOL_NAMES.get(get("IPVS_SVC_ATTR_PROTOCOL"))
            if get("IPVS_SVC_ATTR_FWMARK") or protocol is None:
                continue
            key = (protocol, _canonical(get("IPVS_SVC_ATTR_ADDR")), get("IPVS_SVC_ATTR_PORT"))
            flags = (get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
            found[key] = _KernelService(scheduler=get("IPVS_SVC_ATTR_SCHED_NAME"),
                                        flags=flags & ~F_HASHED,
                                        timeout=get("IPVS_SVC_ATTR_TIMEOUT") or 0)
        return found

    def _dests(self, key: Key) -> dict[tuple[str, int], _KernelDest]:
        found = {}
        for msg in self._ipvs.dest("dump", service=_service_spec(key)):
            get = msg.get_attr("IPVS_CMD_ATTR_DEST").get_attr
            dk = (_canonical(get("IPVS_DEST_ATTR_ADDR")), get("IPVS_DEST_ATTR_PORT"))
            found[dk] = _KernelDest(
                weight=get("IPVS_DEST_ATTR_WEIGHT"), forward=get("IPVS_DEST_ATTR_FWD_METHOD"),
                connections=(get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0)
                + (get("IPVS_DEST_ATTR_INACT_CONNS") or 0))
        return found

    # ---- the sync ---------------------------------------------------------

    def sync(self, desired: Iterable[VirtualService]) -> list[str]:
        """Create missing services; edit in place those whose scheduler/persistence/flags
        differ; diff their destinations; delete owned services not desired. Returns what
        changed, as readable lines."""
        want = desired_table(desired, self._owned)
        have = self._services()
        changed: list[str] = []
        errors: list[str] = []
        seen: set = set()
        for key in sorted(have.keys() - want.keys()):
            if self._owned(*key):
                self._attempt(key, errors, lambda k=key: self._delete_service(k, changed))
        failed = set()
        for key, vs in sorted(want.items()):
            if not self._attempt(key, errors, lambda k=key, v=vs: self._ensure_service(
                    k, v, have.get(k), changed, seen)):
                failed.add(key)
        # A service that failed half-way keeps its draining clocks.
        self._draining = {k: t for k, t in self._draining.items() if k in seen or k[0] in failed}
        if errors:
            raise IPVSSyncError("IPVS services not applied: " + "; ".join(errors))
        return changed

    def _attempt(self, key: Key, errors: list[str], action: Callable[[], None]) -> bool:
        try:
            action()
            return True
        except (NetlinkError, OSError, IPVSSyncError) as e:
            message = f"{service_name(key)}: {e}"
            self._log.error("IPVS service %s", message)
            errors.append(message)
            return False

    def _delete_service(self, key: Key, changed: list[str]) -> None:
        try:
            self._ipvs.service("del", service=_service_spec(key))
        except NetlinkError as e:
            if e.code != errno.ESRCH:      # gone since the dump
                raise
        changed.append(f"delete service {service_name(key)}")

    def _ensure_service(self, key: Key, vs: VirtualService, have: _KernelService | None,
                        changed: list[str], seen: set) -> None:
        name = service_name(key)
        want = _KernelService(vs.scheduler, _wanted_flags(vs), vs.persistent)
        try:
            if have is None:
                self._ipvs.service("add", service=_service_spec(key, want))
                changed.append(f"add service {name} {_describe(want)}")
            elif have != want:
                self._ipvs.service("set", service=_service_spec(key, want))
                changed.append(f"set service {name} {_describe(want)} (was {_describe(have)})")
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                raise IPVSSyncError(f"scheduler {vs.scheduler!r} is unknown to this kernel "
                                    f"(no ip_vs_{vs.scheduler} module): {e}") from e
            raise IPVSSyncError(f"cannot {'add' if have is None else 'set'} service "
                                f"{_describe(want)}: {e}") from e
        self._sync_dests(key, vs, {} if have is None else self._dests(key), changed, seen)

    def _sync_dests(self, key: Key, vs: VirtualService, have: dict, changed: list[str],
                    seen: set) -> None:
        want = _wanted_dests(key, vs)
        for dk in sorted(have.keys() - want.keys()):
            self._retire(key, dk, have[dk], changed, seen)
        for dk, d in sorted(want.items()):
            kd = have.get(dk)
            line = f"{service_name(key)} -> {_endpoint(*dk)} {d.forward} weight {d.weight}"
            if kd is None:
                self._dest("add", key, dk, d)
                changed.append(f"add destination {line}")
            elif (kd.weight, kd.forward) != (d.weight, FORWARD[d.forward]):
                self._dest("set", key, dk, d)
                changed.append(f"set destination {line} (was {FORWARD_NAMES.get(kd.forward)} "
                               f"weight {kd.weight})")

    def _dest(self, command: str, key: Key, dk: tuple[str, int], d: Destination) -> None:
        try:
            self._ipvs.dest(command, service=_service_spec(key), dest=_dest_spec(dk, d))
        except NetlinkError as e:
            hint = ""
            if e.code == errno.EINVAL and command == "add" and ":" not in dk[0]:
                hint = " (IPVS takes only a unicast or local IPv4 address as real server)"
            raise IPVSSyncError(f"cannot {command} destination {_endpoint(*dk)}: {e}{hint}") from e

    def _retire(self, key: Key, dk: tuple[str, int], kd: _KernelDest, changed: list[str],
                seen: set) -> None:
        """Delete a destination no longer wanted, or with ``graceful`` drain it first."""
        line = f"{service_name(key)} -> {_endpoint(*dk)}"
        if self._graceful is not None:
            now = self._clock()
            since = self._draining.setdefault((key, dk), now)
            if kd.connections and now - since < self._graceful:
                seen.add((key, dk))
                if kd.weight != 0:
                    self._dest("set", key, dk, Destination(
                        *dk, weight=0, forward=FORWARD_NAMES.get(kd.forward, "masq")))
                    changed.append(f"drain destination {line} ({kd.connections} connections)")
                return
        try:
            self._ipvs.dest("del", service=_service_spec(key), dest=_dest_spec(dk))
        except NetlinkError as e:
            if e.code != errno.ENOENT:     # gone since the dump
                raise
        changed.append(f"delete destination {line}")


def _describe(s: _KernelService) -> str:
    flags = [n for n, bit in sorted(FLAGS.items()) if s.flags & bit]
    text = s.scheduler
    if s.flags & F_PERSISTENT:
        text += f" persistent {s.timeout}s"
    return text + (f" flags {','.join(flags)}" if flags else "")


def _service_spec(key: Key, settings: _KernelService | None = None):
    """The service's key, or its full entry with ``settings`` (add and set need one)."""
    from pyroute2 import IPVSService
    protocol, address, port = key
    spec = {"protocol": PROTOCOLS[protocol], "addr": address, "port": port}
    if settings is not None:
        spec.update(sched_name=settings.scheduler, timeout=settings.timeout,
                    flags={"flags": settings.flags, "mask": FLAGS_MASK})
        if ":" in address:
            spec["netmask"] = V6_NETMASK
    return IPVSService(**spec)


def _dest_spec(dk: tuple[str, int], d: Destination | None = None):
    from pyroute2 import IPVSDest
    address, port = dk
    if d is None:
        return IPVSDest(addr=address, port=port)
    return IPVSDest(addr=address, port=port, weight=d.weight, fwd_method=FORWARD[d.forward])



_TIMEOUT_LINE = "Timeout (tcp tcpfin udp):"


def ensure_timeouts(tcp: int, tcpfin: int, udp: int, run=None) -> bool:
    """IPVS's connection timeouts (--service-tcp-timeout, -tcpfin-, -udp-), in seconds; 0 keeps
    the kernel's value. ipvsadm does it in one call (pyroute2 has no IPVS_CMD_SET_CONFIG).
    True if they had to change."""
    if not (tcp or tcpfin or udp):
        return False
    if run is None:
        from lowlevel.xtables import run_command as run
    shown = run(["ipvsadm", "-L", "--timeout"], None)
    current = None
    for line in shown.stdout.splitlines():
        if line.startswith(_TIMEOUT_LINE):
            current = tuple(int(v) for v in line[len(_TIMEOUT_LINE):].split())
    wanted = (tcp, tcpfin, udp)
    if current is not None and all(w in (0, c) for w, c in zip(wanted, current)):
        return False
    done = run(["ipvsadm", "--set", *map(str, wanted)], None)
    if done.returncode != 0:
        raise IPVSSyncError(f"ipvsadm --set {tcp} {tcpfin} {udp} failed: "
                            f"{(done.stderr or done.stdout).strip()}")
    return True
