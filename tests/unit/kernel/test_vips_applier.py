"""The VIP applier against a small stateful model of one namespace's links and addresses
(the rtnetlink calls it uses, with the kernel's answers measured on Linux 6.1)."""
from __future__ import annotations

import errno
import ipaddress

import pytest

from helpers.netlink_fakes import Msg, refuse
from proxyd.kernel import names
from proxyd.kernel.vips import RT_SCOPE_LINK, VIPApplier, VIPSyncError


class FakeLinks:
    def __init__(self, kinds=("loopback", "dummy", "veth")):
        self.kinds = set(kinds)
        self.links: dict[int, Msg] = {}
        self.addrs: list[Msg] = []
        self._next = 1
        self.add_link("lo", "loopback", up=True)

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
                self._add(index, f"fe80::{index}", 64, RT_SCOPE_LINK)
            return []
        if command == "set":
            return []
        raise AssertionError(f"unexpected link command {command}")

    def get_addr(self, index=None):
        return [Msg(a) for a in self.addrs if index is None or a["index"] == index]

    def addr(self, command, index, address, prefixlen, **kw):
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
            scope = RT_SCOPE_LINK if ipaddress.ip_address(address).is_link_local else 0
        self.addrs.append(Msg(index=index, IFA_ADDRESS=address, prefixlen=prefixlen,
                              scope=scope, family=10 if ":" in address else 2))


DEV = names.DUMMY_IF


def test_creates_the_dummy_up_with_host_prefixes_then_converges():
    ipr = FakeLinks()
    applier = VIPApplier(ipr=ipr)

    changed = applier.sync(["10.96.0.10", "fd00:96::10", "10.96.0.1"])

    assert DEV == "kube-dummy-if"
    assert ipr.links[ipr.index(DEV)].get(("linkinfo", "kind")) == "dummy" and ipr.up(DEV)
    assert ipr.on(DEV) >= {("10.96.0.1", 32, RT_SCOPE_LINK), ("10.96.0.10", 32, RT_SCOPE_LINK),
                           ("fd00:96::10", 128, 0)}
    assert changed == ["create kube-dummy-if", "set kube-dummy-if up",
                       "add 10.96.0.1/32 to kube-dummy-if", "add 10.96.0.10/32 to kube-dummy-if",
                       "add fd00:96::10/128 to kube-dummy-if"]
    assert applier.sync(["10.96.0.1", "fd00:96:0:0::10", "10.96.0.10"]) == []


def test_removes_other_addresses_from_the_device_only():
    ipr = FakeLinks()
    eth = ipr.add_link("eth0", "veth", up=True)
    ipr.addr("add", index=eth, address="10.96.0.20", prefixlen=32)
    applier = VIPApplier(ipr=ipr)
    applier.sync(["10.96.0.10", "10.96.0.20"])
    index = ipr.index(DEV)
    ipr.addr("add", index=index, address="10.96.0.30", prefixlen=32)     # a stale VIP
    ipr.addr("add", index=index, address="10.96.0.10", prefixlen=24)     # wrong prefix

    changed = applier.sync(["10.96.0.10"])

    assert {(a, p) for a, p, _ in ipr.on(DEV)} == {("10.96.0.10", 32), (f"fe80::{index}", 64)}
    assert ("10.96.0.20", 32, 0) in ipr.on("eth0")
    assert changed == ["delete 10.96.0.10/24 from kube-dummy-if",
                       "delete 10.96.0.20/32 from kube-dummy-if",
                       "delete 10.96.0.30/32 from kube-dummy-if"]


def test_empty_desired_removes_every_vip_and_keeps_the_device():
    ipr = FakeLinks()
    applier = VIPApplier(ipr=ipr)
    applier.sync(["10.96.0.10", "fd00:96::10"])

    assert applier.sync([]) == ["delete 10.96.0.10/32 from kube-dummy-if",
                                "delete fd00:96::10/128 from kube-dummy-if"]
    assert {a for a, _, _ in ipr.on(DEV)} == {f"fe80::{ipr.index(DEV)}"}
    assert applier.sync([]) == []


def test_an_existing_dummy_that_is_down_is_brought_up():
    ipr = FakeLinks()
    ipr.add_link(DEV, "dummy")
    assert VIPApplier(ipr=ipr).sync([]) == ["set kube-dummy-if up"]
    assert ipr.up(DEV)


def test_a_device_of_another_kind_under_the_name_is_refused():
    ipr = FakeLinks()
    ipr.add_link(DEV, "veth", up=True)
    with pytest.raises(VIPSyncError, match="not a dummy interface"):
        VIPApplier(ipr=ipr).sync(["10.96.0.10"])
    assert ipr.on(DEV) == {(f"fe80::{ipr.index(DEV)}", 64, RT_SCOPE_LINK)}


def test_a_kernel_without_dummy_says_which_module_is_missing():
    ipr = FakeLinks(kinds=("loopback",))
    with pytest.raises(VIPSyncError, match=r"lacks the dummy module \(modprobe dummy\)"):
        VIPApplier(ipr=ipr).sync(["10.96.0.10"])


def test_a_custom_device_name_is_used():
    ipr = FakeLinks()
    VIPApplier("kube-vips", ipr=ipr).sync(["10.96.0.10"])
    assert ("10.96.0.10", 32, RT_SCOPE_LINK) in ipr.on("kube-vips")
    assert not ipr.link_lookup(ifname=DEV)
