"""Pieces the stateful pyroute2 fakes of the unit tests share, and the links fake."""
from __future__ import annotations

import errno
import ipaddress

from pyroute2.netlink.exceptions import NetlinkError


class Msg(dict):
    """A netlink message as an applier reads it: fields and attributes by name, nested ones
    by a tuple path."""

    def get(self, key, default=None):
        node = self
        for part in key if isinstance(key, tuple) else (key,):
            node = dict.get(node, part) if isinstance(node, dict) else None
        return default if node is None else node


def refuse(code):
    """The error the kernel answers with ``code`` (EEXIST, ENODEV, ...)."""
    return NetlinkError(code, errno.errorcode[code])


SCOPE_LINK = 253


class FakeLinks:
    """One namespace's links and addresses: the rtnetlink calls the VIP applier uses, with
    the kernel's answers measured on Linux 6.1."""

    def __init__(self, kinds=("loopback", "dummy", "veth")):
        self.kinds = set(kinds)
        self.links: dict[int, Msg] = {}
        self.addrs: list[Msg] = []
        self._next = 1
        self.add_link("lo", "loopback", up=True)
        self.calls: list[str] = []      # "dump", "add ADDRESS", "del ADDRESS", in order

    # -- set-up and inspection helpers ---------------------------------------
    def add_link(self, name, kind, up=False):
        self.link("add", ifname=name, kind=kind)
        if up:
            self.link("set", index=self.index(name), state="up")
        return self.index(name)

    def index(self, name):
        (i,) = self.link_lookup(ifname=name)
        return i

    def on(self, name):
        """{(address, prefixlen, scope)} on the device."""
        index = self.index(name)
        return {(a["IFA_ADDRESS"], a["prefixlen"], a["scope"]) for a in self.addrs
                if a["index"] == index}

    def up(self, name):
        return bool(self.links[self.index(name)]["flags"] & 1)

    # -- the IPRoute calls ----------------------------------------------------
    def close(self):
        pass

    def link_lookup(self, ifname):
        return [i for i, m in self.links.items() if m["ifname"] == ifname]

    def link(self, command, index=None, **kw):
        if command == "add":
            if kw["kind"] not in self.kinds:
                raise refuse(errno.EOPNOTSUPP)
            if self.link_lookup(ifname=kw["ifname"]):
                raise refuse(errno.EEXIST)
            self.links[self._next] = Msg(index=self._next, ifname=kw["ifname"], flags=0,
                                         linkinfo={"kind": kw["kind"]})
            self._next += 1
            return []
        if index not in self.links:
            raise refuse(errno.ENODEV)
        if command == "get":
            return [Msg(self.links[index])]
        if command == "set" and kw.get("state") == "up" and not self.links[index]["flags"] & 1:
            self.links[index]["flags"] |= 1
            if self.links[index].get(("linkinfo", "kind")) != "loopback":
                # the kernel gives an interface coming up its IPv6 link-local address
                self._add(index, f"fe80::{index}", 64, SCOPE_LINK)
            return []
        if command == "set":
            return []
        raise AssertionError(f"unexpected link command {command}")

    def get_addr(self, index=None):
        self.calls.append("dump")
        return [Msg(a) for a in self.addrs if index is None or a["index"] == index]

    def addr(self, command, index, address, prefixlen, **kw):
        self.calls.append(f"{command} {address}")
        if index not in self.links:
            raise refuse(errno.ENODEV)
        canonical = ipaddress.ip_address(address).compressed
        found = [a for a in self.addrs if a["index"] == index and a["IFA_ADDRESS"] == canonical
                 and a["prefixlen"] == prefixlen]
        if command == "add":
            if found:
                raise refuse(errno.EEXIST)
            self._add(index, canonical, prefixlen, kw.get("scope", 0))
        elif command == "del":
            if not found:
                raise refuse(errno.EADDRNOTAVAIL)
            self.addrs.remove(found[0])
        else:
            raise AssertionError(f"unexpected addr command {command}")
        return []

    def _add(self, index, address, prefixlen, scope):
        if ":" in address:
            # IPv6 ignores the requested scope and derives it from the address.
            scope = SCOPE_LINK if ipaddress.ip_address(address).is_link_local else 0
        self.addrs.append(Msg(index=index, IFA_ADDRESS=address, prefixlen=prefixlen,
                              scope=scope, family=10 if ":" in address else 2))
