"""The service proxy's writer of VIPs on the node's dummy interface (pyroute2).

Every ClusterIP, external and LoadBalancer IP the node serves is a local
address on ``kube-dummy-if`` (kube-router's interface, so a node moved over
is adopted): the node then accepts packets for it and IPVS sees them in
INPUT. As kube-router does, an address is a host prefix (/32, /128) with
scope link, and the link is up. Only addresses on that device are touched.

Measured on Linux 6.1:
- A dummy device is IFF_NOARP, so IPv6 addresses on it skip duplicate
  address detection: they are usable at once, no ``nodad`` needed.
- The kernel ignores the requested scope of an IPv6 address and derives it
  from the address (a ULA VIP reads back as scope global): scope is not
  compared.
- Bringing the device up gives it an fe80::/64 link-local address; that one
  is the kernel's and is left alone.
- A kernel without the dummy module answers RTM_NEWLINK with EOPNOTSUPP.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from typing import Iterable

from pyroute2.netlink.exceptions import NetlinkError

from lowlevel.netlink import NetlinkSocket, attr
from proxyd.kernel import names

log = logging.getLogger(__name__)

IFF_UP = 0x1
RT_SCOPE_LINK = 253
HOST_PREFIX = {4: 32, 6: 128}
NETLINK_ROUTE, RTM_NEWADDR, RTM_DELADDR = 0, 20, 21
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
IFA_ADDRESS, IFA_LOCAL = 1, 2
# Already there (add) or already gone (delete): what was wanted holds.
SETTLED = {"add": errno.EEXIST, "del": errno.EADDRNOTAVAIL}


class AddressBatch:
    """Address adds and deletes in batches of one datagram (lowlevel/netlink.py): pyroute2
    spent ~18 ms of Python per address under the VM's TCG, 3.6 s for 200 VIPs."""

    def __init__(self):
        self._sock = NetlinkSocket(NETLINK_ROUTE)

    def close(self) -> None:
        self._sock.close()

    def write(self, index: int, changes: list[tuple[str, object, int]]) -> list[int]:
        """(command "add"/"del", ip_address, prefix length) each; each one's errno."""
        requests = []
        for command, address, prefixlen in changes:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            payload = (struct.pack("=BBBBI", family, prefixlen, 0, RT_SCOPE_LINK, index)
                       + attr(IFA_LOCAL, address.packed) + attr(IFA_ADDRESS, address.packed))
            requests.append((RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, payload)
                            if command == "add" else (RTM_DELADDR, 0, payload))
        return self._sock.write(requests)


class PerCall:
    """The same writes through an IPRoute-like handle, one call each (an injected one)."""

    def __init__(self, ipr):
        self._ipr = ipr

    def close(self) -> None:
        pass

    def write(self, index: int, changes: list[tuple[str, object, int]]) -> list[int]:
        codes = []
        for command, address, prefixlen in changes:
            scope = {"scope": RT_SCOPE_LINK} if command == "add" else {}
            try:
                self._ipr.addr(command, index=index, address=str(address), prefixlen=prefixlen,
                               **scope)
                codes.append(0)
            except NetlinkError as e:
                codes.append(e.code)
        return codes


class VIPSyncError(RuntimeError):
    """The dummy device or some of its addresses could not be applied."""


class VIPApplier:
    def __init__(self, device: str = names.DUMMY_IF, *, ipr=None, log: logging.Logger = log):
        """ipr: an IPRoute-like handle (its addresses are then written one call each)."""
        self._writer = AddressBatch() if ipr is None else PerCall(ipr)
        if ipr is None:
            from pyroute2 import IPRoute
            ipr = IPRoute()
        self._ipr = ipr
        self._device = device
        self._log = log
        self._index: int | None = None     # the device, as the last write left it

    def close(self) -> None:
        self._ipr.close()
        self._writer.close()

    def sync(self, desired: Iterable[str]) -> list[str]:
        """Ensure the device exists and is up and holds exactly the desired VIPs as host
        prefixes (read from the kernel). Returns what changed."""
        self._index = None
        want = {ipaddress.ip_address(a) for a in desired}
        changed: list[str] = []
        index = self._ensure_device(changed)
        have = self._addresses(index)
        gone = sorted(have - {(a, HOST_PREFIX[a.version]) for a in want}, key=_order)
        new = [a for a in sorted(want, key=_by_address)
               if (a, HOST_PREFIX[a.version]) not in have]
        self._write(index, [("del", a, n) for a, n in gone]
                    + [("add", a, HOST_PREFIX[a.version]) for a in new], changed)
        self._index = index
        return changed

    @property
    def has_applied(self) -> bool:
        return self._index is not None

    def apply_changes(self, added: Iterable[str], removed: Iterable[str]) -> list[str]:
        """Add and remove only these VIPs, on the device the last write left, without
        reading. Needs a successful ``sync`` first; a failure forgets the device, so the
        next write must be a reading ``sync``."""
        if self._index is None:
            raise RuntimeError(f"{self._device}: nothing applied yet to change; sync() first")
        index, self._index = self._index, None
        changed: list[str] = []
        self._write(index, [("del", a, HOST_PREFIX[a.version])
                            for a in sorted(map(ipaddress.ip_address, removed), key=_by_address)]
                    + [("add", a, HOST_PREFIX[a.version])
                       for a in sorted(map(ipaddress.ip_address, added), key=_by_address)],
                    changed)
        self._index = index
        return changed

    def _write(self, index: int, changes: list, changed: list[str]) -> None:
        errors = []
        for (command, address, prefixlen), code in zip(
                changes, self._writer.write(index, changes) if changes else []):
            what = (f"add {address}/{prefixlen} to" if command == "add"
                    else f"delete {address}/{prefixlen} from")
            if code == 0:
                changed.append(f"{what} {self._device}")
            elif code != SETTLED[command]:
                errors.append(f"{command} {address}/{prefixlen}: "
                              f"{errno.errorcode.get(code, code)} ({os.strerror(code)})")
        if errors:
            self._log.error("VIPs on %s: %s", self._device, "; ".join(errors))
            raise VIPSyncError(f"VIPs on {self._device} not applied: " + "; ".join(errors))

    def _ensure_device(self, changed: list[str]) -> int:
        if not self._ipr.link_lookup(ifname=self._device):
            try:
                self._ipr.link("add", ifname=self._device, kind="dummy")
            except NetlinkError as e:
                if e.code == errno.EOPNOTSUPP:
                    raise VIPSyncError(f"cannot create {self._device}: this kernel lacks the "
                                       f"dummy module (modprobe dummy)") from e
                raise VIPSyncError(f"cannot create {self._device}: {e}") from e
            changed.append(f"create {self._device}")
        (index,) = self._ipr.link_lookup(ifname=self._device)
        (link,) = self._ipr.link("get", index=index)
        kind = link.get(("linkinfo", "kind"))
        if kind != "dummy":
            raise VIPSyncError(f"{self._device} exists but is a {kind or 'device of no kind'}, "
                               f"not a dummy interface: refusing to use it")
        if not link["flags"] & IFF_UP:
            self._ipr.link("set", index=index, state="up")
            changed.append(f"set {self._device} up")
        return index

    def _addresses(self, index: int) -> set[tuple[ipaddress._BaseAddress, int]]:
        found = set()
        for msg in self._ipr.get_addr(index=index):
            if msg["index"] != index:
                continue
            address = ipaddress.ip_address(msg.get("IFA_ADDRESS"))
            if address.version == 6 and address.is_link_local:
                continue
            found.add((address, msg["prefixlen"]))
        return found


def _by_address(address) -> tuple:
    return (address.version, address)


def _order(entry) -> tuple:
    address, prefixlen = entry
    return (address.version, address, prefixlen)


def delete_device(device: str = names.DUMMY_IF, ipr=None) -> list[str]:
    """Remove the VIP device and with it every VIP (--cleanup-config); [] if absent."""
    if ipr is None:
        from pyroute2 import IPRoute
        with IPRoute() as own:
            return delete_device(device, own)
    found = ipr.link_lookup(ifname=device)
    if not found:
        return []
    ipr.link("del", index=found[0])
    return ["deleted"]
