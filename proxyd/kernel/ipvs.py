"""The service proxy's one writer of IPVS virtual services (pyroute2, generic netlink).

``sync`` takes the node's whole desired IPVS table as ``VirtualService``
values (proxyd/kernel/state.py), dumps the kernel's table and changes only the
difference (the start, the periodic resync, the retry after an error);
``apply_changes`` takes only the services that changed and writes them
against what the last write left, without dumping the table. Either touches
only services the controller's ``owned(protocol, address, port)`` claims: a
service anyone else made (an operator's ``ipvsadm -A``, another load
balancer, a fwmark service) is never changed, and IPVS is never flushed.

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
import logging
import time
from typing import Callable, Iterable, Mapping

from pyroute2.netlink.exceptions import NetlinkError

from proxyd.kernel.ipvs_table import (F_HASHED, FORWARD, FORWARD_NAMES, PROTOCOL_NAMES,
                                      IPVSSyncError, Key, KernelDest, KernelService, canonical,
                                      check, describe, desired_table, dest_spec, endpoint,
                                      service_name, service_spec, wanted_dests, wanted_flags)
from proxyd.kernel.state import Destination, VirtualService

__all__ = ["F_HASHED", "IPVSApplier", "IPVSSyncError", "Destination", "VirtualService",
           "ensure_timeouts"]

log = logging.getLogger(__name__)


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
        # Our services as the last write left them; None until a reading sync, and
        # again after any failure (the next write must read).
        self._applied: dict[Key, VirtualService] | None = None

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

    def _services(self) -> dict[Key, KernelService]:
        """Every address-based service in the kernel (fwmark ones have no key and are
        never ours)."""
        found = {}
        for msg in self._ipvs.service("dump"):
            attrs = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
            get = attrs.get_attr
            protocol = PROTOCOL_NAMES.get(get("IPVS_SVC_ATTR_PROTOCOL"))
            if get("IPVS_SVC_ATTR_FWMARK") or protocol is None:
                continue
            key = (protocol, canonical(get("IPVS_SVC_ATTR_ADDR")), get("IPVS_SVC_ATTR_PORT"))
            flags = (get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
            found[key] = KernelService(scheduler=get("IPVS_SVC_ATTR_SCHED_NAME"),
                                        flags=flags & ~F_HASHED,
                                        timeout=get("IPVS_SVC_ATTR_TIMEOUT") or 0)
        return found

    def _dests(self, key: Key) -> dict[tuple[str, int], KernelDest]:
        found = {}
        for msg in self._ipvs.dest("dump", service=service_spec(key)):
            get = msg.get_attr("IPVS_CMD_ATTR_DEST").get_attr
            dk = (canonical(get("IPVS_DEST_ATTR_ADDR")), get("IPVS_DEST_ATTR_PORT"))
            found[dk] = KernelDest(
                weight=get("IPVS_DEST_ATTR_WEIGHT"), forward=get("IPVS_DEST_ATTR_FWD_METHOD"),
                connections=(get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0)
                + (get("IPVS_DEST_ATTR_INACT_CONNS") or 0))
        return found

    # ---- the sync ---------------------------------------------------------

    def sync(self, desired: Iterable[VirtualService]) -> list[str]:
        """Create missing services; edit in place those whose scheduler/persistence/flags
        differ; diff their destinations; delete owned services not desired. Returns what
        changed, as readable lines."""
        self._applied = None
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
        self._applied = want
        return changed

    @property
    def has_applied(self) -> bool:
        return self._applied is not None

    @property
    def draining(self) -> bool:
        """Whether some removed destination still waits for its connections to end."""
        return bool(self._draining)

    def apply_changes(self, changed: Mapping[Key, VirtualService | None]) -> list[str]:
        """Write only these services (by canonical key; None: delete it), against what the
        last write left, and look again at the destinations still draining. Reads the
        kernel only for a service whose removed destinations may still hold connections
        (with ``graceful``). Needs a successful ``sync`` first; a failure forgets what was
        applied, so the next write must be a reading ``sync``."""
        if self._applied is None:
            raise RuntimeError("IPVS: nothing applied yet to change; sync() first")
        for key, vs in changed.items():
            if vs is not None:
                check(key, vs)
            if not self._owned(*key):
                raise ValueError(f"{service_name(key)} is not ours to change")
        applied, self._applied = self._applied, None
        keys = set(changed) | {key for key, _ in self._draining}
        lines: list[str] = []
        errors: list[str] = []
        seen: set = set()
        failed = set()
        for key in sorted(keys):
            vs = changed[key] if key in changed else applied.get(key)
            if not self._attempt(key, errors, lambda k=key, v=vs: self._change(
                    k, v, applied.get(k), lines, seen)):
                failed.add(key)
            elif vs is None:
                applied.pop(key, None)
            else:
                applied[key] = vs
        self._draining = {k: t for k, t in self._draining.items()
                          if k in seen or k[0] in failed or k[0] not in keys}
        if errors:
            raise IPVSSyncError("IPVS services not applied: " + "; ".join(errors))
        self._applied = applied
        return lines

    def _drains(self, key: Key) -> bool:
        return any(k == key for k, _ in self._draining)

    def _change(self, key: Key, vs: VirtualService | None, old: VirtualService | None,
                lines: list[str], seen: set) -> None:
        if vs is None:
            if old is not None or self._drains(key):
                self._delete_service(key, lines)
            return
        have = None if old is None else KernelService(old.scheduler, wanted_flags(old),
                                                      old.persistent)
        kernel = None
        if old is not None and not (self._graceful is not None and (
                set(wanted_dests(key, old)) - set(wanted_dests(key, vs))
                or self._drains(key))):
            kernel = {dk: KernelDest(d.weight, FORWARD[d.forward], 0)
                      for dk, d in wanted_dests(key, old).items()}
        self._ensure_service(key, vs, have, lines, seen, kernel)

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
            self._ipvs.service("del", service=service_spec(key))
        except NetlinkError as e:
            if e.code != errno.ESRCH:      # gone since the dump
                raise
        changed.append(f"delete service {service_name(key)}")

    def _ensure_service(self, key: Key, vs: VirtualService, have: KernelService | None,
                        changed: list[str], seen: set, dests: dict | None = None) -> None:
        """``dests``: the service's destinations as known; None reads them."""
        name = service_name(key)
        want = KernelService(vs.scheduler, wanted_flags(vs), vs.persistent)
        try:
            if have is None:
                self._ipvs.service("add", service=service_spec(key, want))
                changed.append(f"add service {name} {describe(want)}")
            elif have != want:
                self._ipvs.service("set", service=service_spec(key, want))
                changed.append(f"set service {name} {describe(want)} (was {describe(have)})")
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                raise IPVSSyncError(f"scheduler {vs.scheduler!r} is unknown to this kernel "
                                    f"(no ip_vs_{vs.scheduler} module): {e}") from e
            raise IPVSSyncError(f"cannot {'add' if have is None else 'set'} service "
                                f"{describe(want)}: {e}") from e
        if have is None:
            dests = {}
        elif dests is None:
            dests = self._dests(key)
        self._sync_dests(key, vs, dests, changed, seen)

    def _sync_dests(self, key: Key, vs: VirtualService, have: dict, changed: list[str],
                    seen: set) -> None:
        want = wanted_dests(key, vs)
        for dk in sorted(have.keys() - want.keys()):
            self._retire(key, dk, have[dk], changed, seen)
        for dk, d in sorted(want.items()):
            kd = have.get(dk)
            line = f"{service_name(key)} -> {endpoint(*dk)} {d.forward} weight {d.weight}"
            if kd is None:
                self._dest("add", key, dk, d)
                changed.append(f"add destination {line}")
            elif (kd.weight, kd.forward) != (d.weight, FORWARD[d.forward]):
                self._dest("set", key, dk, d)
                changed.append(f"set destination {line} (was {FORWARD_NAMES.get(kd.forward)} "
                               f"weight {kd.weight})")

    def _dest(self, command: str, key: Key, dk: tuple[str, int], d: Destination) -> None:
        try:
            self._ipvs.dest(command, service=service_spec(key), dest=dest_spec(dk, d))
        except NetlinkError as e:
            hint = ""
            if e.code == errno.EINVAL and command == "add" and ":" not in dk[0]:
                hint = " (IPVS takes only a unicast or local IPv4 address as real server)"
            raise IPVSSyncError(f"cannot {command} destination {endpoint(*dk)}: {e}{hint}") from e

    def _retire(self, key: Key, dk: tuple[str, int], kd: KernelDest, changed: list[str],
                seen: set) -> None:
        """Delete a destination no longer wanted, or with ``graceful`` drain it first."""
        line = f"{service_name(key)} -> {endpoint(*dk)}"
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
            self._ipvs.dest("del", service=service_spec(key), dest=dest_spec(dk))
        except NetlinkError as e:
            if e.code != errno.ENOENT:     # gone since the dump
                raise
        changed.append(f"delete destination {line}")


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
