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
from typing import Iterable

from pyroute2.netlink.exceptions import NetlinkError

from proxyd.kernel import names

log = logging.getLogger(__name__)

IFF_UP = 0x1
RT_SCOPE_LINK = 253
HOST_PREFIX = {4: 32, 6: 128}


class VIPSyncError(RuntimeError):
    """The dummy device or some of its addresses could not be applied."""


class VIPApplier:
    def __init__(self, device: str = names.DUMMY_IF, *, ipr=None, log: logging.Logger = log):
        if ipr is None:
            from pyroute2 import IPRoute
            ipr = IPRoute()
        self._ipr = ipr
        self._device = device
        self._log = log
        self._index: int | None = None     # the device, as the last write left it

    def close(self) -> None:
        self._ipr.close()

    def sync(self, desired: Iterable[str]) -> list[str]:
        """Ensure the device exists and is up and holds exactly the desired VIPs as host
        prefixes (read from the kernel). Returns what changed."""
        self._index = None
        want = {ipaddress.ip_address(a) for a in desired}
        changed: list[str] = []
        index = self._ensure_device(changed)
        have = self._addresses(index)
        errors: list[str] = []
        for (address, prefixlen) in sorted(have - {(a, HOST_PREFIX[a.version]) for a in want},
                                           key=_order):
            self._delete(index, address, prefixlen, changed, errors)
        for address in sorted(want, key=lambda a: _order((a, 0))):
            if (address, HOST_PREFIX[address.version]) not in have:
                self._add(index, address, changed, errors)
        self._raise(errors)
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
        errors: list[str] = []
        for address in sorted(map(ipaddress.ip_address, removed), key=lambda a: _order((a, 0))):
            self._delete(index, address, HOST_PREFIX[address.version], changed, errors)
        for address in sorted(map(ipaddress.ip_address, added), key=lambda a: _order((a, 0))):
            self._add(index, address, changed, errors)
        self._raise(errors)
        self._index = index
        return changed

    def _delete(self, index: int, address, prefixlen: int, changed: list[str],
                errors: list[str]) -> None:
        try:
            self._ipr.addr("del", index=index, address=str(address), prefixlen=prefixlen)
            changed.append(f"delete {address}/{prefixlen} from {self._device}")
        except NetlinkError as e:
            if e.code != errno.EADDRNOTAVAIL:     # already gone
                errors.append(f"delete {address}/{prefixlen}: {e}")

    def _add(self, index: int, address, changed: list[str], errors: list[str]) -> None:
        prefixlen = HOST_PREFIX[address.version]
        try:
            self._ipr.addr("add", index=index, address=str(address), prefixlen=prefixlen,
                           scope=RT_SCOPE_LINK)
            changed.append(f"add {address}/{prefixlen} to {self._device}")
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                errors.append(f"add {address}/{prefixlen}: {e}")

    def _raise(self, errors: list[str]) -> None:
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
