"""The service proxy's one writer of IPVS virtual services (generic netlink).

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

Every write of one sync goes out in batches (ipvs_netlink.py), in the order
it was planned: a service's add before its destinations'. A request the
kernel refuses names its service; the rest of the batch still applies.

Measured on Linux 6.1 (tests/kernel/test_ipvs_applier_kernel.py):
- The kernel sets IP_VS_SVC_F_HASHED on every service in its table, so
  "hashed" is always there and is left out when comparing.
- An IPv4 real server must be a unicast or local address (inet_addr_type
  on the local table): a multicast or broadcast one is EINVAL, and so is
  every one in a namespace that has no IPv4 local table yet (not even lo up).
- The netlink socket belongs to the namespace of the thread that opened it:
  the applier opens its own on the thread of its first sync (the runner's),
  unless one is injected.
- An unknown scheduler is ENOENT (its ip_vs_<name> module cannot be found).
"""
from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from proxyd.kernel.ipvs_netlink import request
from proxyd.kernel.ipvs_table import (F_HASHED, FORWARD, FORWARD_NAMES, PROTOCOL_NAMES,
                                      IPVSSyncError, Key, KernelDest, KernelService, canonical,
                                      check, describe, desired_table, dest_attrs, endpoint,
                                      service_attrs, service_name, wanted_dests, wanted_flags)
from proxyd.kernel.state import Destination, VirtualService

__all__ = ["F_HASHED", "IPVSApplier", "IPVSSyncError", "Destination", "VirtualService",
           "ensure_timeouts"]

log = logging.getLogger(__name__)
# A delete the kernel answers "no such service/destination" found it gone already.
GONE = {("service", "del"): errno.ESRCH, ("dest", "del"): errno.ENOENT}


@dataclass(frozen=True)
class _Write:
    key: Key
    kind: str                                  # "service" or "dest"
    command: str                               # "add", "set", "del"
    request: bytes
    line: str                                  # what changed, once it did
    refused: Callable[[int], str]              # why, from the kernel's errno


def _errno(code: int) -> str:
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


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
        self._writes: list[_Write] = []

    @property
    def _ipvs(self):
        if self._handle is None:
            from proxyd.kernel.ipvs_netlink import IPVSNetlink
            self._handle = IPVSNetlink()
        return self._handle

    def _queue(self, key: Key, kind: str, command: str, line: str, refused,
               dk: tuple[str, int] | None = None, dest: Destination | None = None,
               settings: KernelService | None = None) -> None:
        self._writes.append(_Write(key, kind, command, request(
            kind, command, service_attrs(key, settings),
            None if dk is None else dest_attrs(dk, dest)), line, refused))

    def _flush(self, changed: list[str], errors: list[str], failed: set) -> None:
        """Send what the sync planned; a refused request fails its service (once)."""
        writes, self._writes = self._writes, []
        codes = self._ipvs.write([w.request for w in writes]) if writes else []
        for w, code in zip(writes, codes):
            if code == 0 or code == GONE.get((w.kind, w.command)):
                changed.append(w.line)
            elif w.key not in failed:
                failed.add(w.key)
                message = f"{service_name(w.key)}: {w.refused(code)}"
                self._log.error("IPVS service %s", message)
                errors.append(message)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    # ---- reading the kernel -----------------------------------------------

    def _services(self) -> dict[Key, KernelService]:
        """Every address-based service in the kernel (fwmark ones have no key and are
        never ours)."""
        found = {}
        for attrs in self._ipvs.dump("service"):
            protocol = PROTOCOL_NAMES.get(attrs.get("protocol"))
            if attrs.get("fwmark") or protocol is None:
                continue
            key = (protocol, canonical(attrs["addr"]), attrs["port"])
            found[key] = KernelService(scheduler=attrs.get("sched_name", ""),
                                       flags=attrs.get("flags", (0, 0))[0] & ~F_HASHED,
                                       timeout=attrs.get("timeout", 0))
        return found

    def _dests(self, key: Key) -> dict[tuple[str, int], KernelDest]:
        found = {}
        for attrs in self._ipvs.dump("dest", service_attrs(key)):
            dk = (canonical(attrs["addr"]), attrs["port"])
            found[dk] = KernelDest(weight=attrs.get("weight", 0),
                                   forward=attrs.get("fwd_method", 0),
                                   connections=attrs.get("active_conns", 0)
                                   + attrs.get("inact_conns", 0))
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
                self._attempt(key, errors, lambda k=key: self._delete_service(k))
        failed = set()
        for key, vs in sorted(want.items()):
            if not self._attempt(key, errors, lambda k=key, v=vs: self._ensure_service(
                    k, v, have.get(k), seen)):
                failed.add(key)
        self._flush(changed, errors, failed)
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
                    k, v, applied.get(k), seen)):
                failed.add(key)
        self._flush(lines, errors, failed)
        for key in set(changed) - failed:
            if changed[key] is None:
                applied.pop(key, None)
            else:
                applied[key] = changed[key]
        self._draining = {k: t for k, t in self._draining.items()
                          if k in seen or k[0] in failed or k[0] not in keys}
        if errors:
            raise IPVSSyncError("IPVS services not applied: " + "; ".join(errors))
        self._applied = applied
        return lines

    def _drains(self, key: Key) -> bool:
        return any(k == key for k, _ in self._draining)

    def _change(self, key: Key, vs: VirtualService | None, old: VirtualService | None,
                seen: set) -> None:
        if vs is None:
            if old is not None or self._drains(key):
                self._delete_service(key)
            return
        have = None if old is None else KernelService(old.scheduler, wanted_flags(old),
                                                      old.persistent)
        kernel = None
        if old is not None and not (self._graceful is not None and (
                set(wanted_dests(key, old)) - set(wanted_dests(key, vs))
                or self._drains(key))):
            kernel = {dk: KernelDest(d.weight, FORWARD[d.forward], 0)
                      for dk, d in wanted_dests(key, old).items()}
        self._ensure_service(key, vs, have, seen, kernel)

    def _attempt(self, key: Key, errors: list[str], action: Callable[[], None]) -> bool:
        """Plan one service's writes; a failed read drops what it planned."""
        try:
            action()
            return True
        except (OSError, IPVSSyncError) as e:
            self._writes = [w for w in self._writes if w.key != key]
            message = f"{service_name(key)}: {e}"
            self._log.error("IPVS service %s", message)
            errors.append(message)
            return False

    def _delete_service(self, key: Key) -> None:
        self._queue(key, "service", "del", f"delete service {service_name(key)}",
                    lambda code: f"cannot delete service: {_errno(code)}")

    def _ensure_service(self, key: Key, vs: VirtualService, have: KernelService | None,
                        seen: set, dests: dict | None = None) -> None:
        """``dests``: the service's destinations as known; None reads them."""
        name = service_name(key)
        want = KernelService(vs.scheduler, wanted_flags(vs), vs.persistent)
        command = "add" if have is None else "set"

        def refused(code: int) -> str:
            if code == errno.ENOENT:
                return (f"scheduler {vs.scheduler!r} is unknown to this kernel "
                        f"(no ip_vs_{vs.scheduler} module): {_errno(code)}")
            return f"cannot {command} service {describe(want)}: {_errno(code)}"
        if have is None:
            self._queue(key, "service", "add", f"add service {name} {describe(want)}", refused,
                        settings=want)
        elif have != want:
            self._queue(key, "service", "set", f"set service {name} {describe(want)} "
                        f"(was {describe(have)})", refused, settings=want)
        if have is None:
            dests = {}
        elif dests is None:
            dests = self._dests(key)
        self._sync_dests(key, vs, dests, seen)

    def _sync_dests(self, key: Key, vs: VirtualService, have: dict, seen: set) -> None:
        want = wanted_dests(key, vs)
        for dk in sorted(have.keys() - want.keys()):
            self._retire(key, dk, have[dk], seen)
        for dk, d in sorted(want.items()):
            kd = have.get(dk)
            line = f"{service_name(key)} -> {endpoint(*dk)} {d.forward} weight {d.weight}"
            if kd is None:
                self._dest("add", key, dk, d, f"add destination {line}")
            elif (kd.weight, kd.forward) != (d.weight, FORWARD[d.forward]):
                self._dest("set", key, dk, d, f"set destination {line} (was "
                           f"{FORWARD_NAMES.get(kd.forward)} weight {kd.weight})")

    def _dest(self, command: str, key: Key, dk: tuple[str, int], d: Destination | None,
              line: str) -> None:
        def refused(code: int) -> str:
            hint = ""
            if code == errno.EINVAL and command == "add" and ":" not in dk[0]:
                hint = " (IPVS takes only a unicast or local IPv4 address as real server)"
            return f"cannot {command} destination {endpoint(*dk)}: {_errno(code)}{hint}"
        self._queue(key, "dest", command, line, refused, dk, d)

    def _retire(self, key: Key, dk: tuple[str, int], kd: KernelDest, seen: set) -> None:
        """Delete a destination no longer wanted, or with ``graceful`` drain it first."""
        line = f"{service_name(key)} -> {endpoint(*dk)}"
        if self._graceful is not None:
            now = self._clock()
            since = self._draining.setdefault((key, dk), now)
            if kd.connections and now - since < self._graceful:
                seen.add((key, dk))
                if kd.weight != 0:
                    self._dest("set", key, dk, Destination(
                        *dk, weight=0, forward=FORWARD_NAMES.get(kd.forward, "masq")),
                        f"drain destination {line} ({kd.connections} connections)")
                return
        self._dest("del", key, dk, None, f"delete destination {line}")


_TIMEOUT_LINE = "Timeout (tcp tcpfin udp):"


def ensure_timeouts(tcp: int, tcpfin: int, udp: int, run=None) -> bool:
    """IPVS's connection timeouts (--service-tcp-timeout, -tcpfin-, -udp-), in seconds; 0 keeps
    the kernel's value. ipvsadm does it in one call (ipvs_netlink.py speaks no IPVS_CMD_SET_CONFIG).
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
