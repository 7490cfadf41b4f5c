"""The VIP applier against a small stateful model of one namespace's links and addresses
(the rtnetlink calls it uses, with the kernel's answers measured on Linux 6.1)."""
from __future__ import annotations


import pytest

from helpers.netlink_fakes import FakeLinks
from proxyd.kernel import names
from proxyd.kernel.vips import RT_SCOPE_LINK, VIPApplier, VIPSyncError


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


def test_changes_write_only_the_vips_that_moved_without_reading():
    ipr = FakeLinks()
    applier = VIPApplier(ipr=ipr)
    with pytest.raises(RuntimeError, match="sync"):
        applier.apply_changes(["10.96.0.1"], [])
    applier.sync([f"10.96.0.{i}" for i in range(1, 50)])
    ipr.calls.clear()

    changed = applier.apply_changes(["10.96.1.1"], ["10.96.0.7"])

    assert ipr.calls == ["del 10.96.0.7", "add 10.96.1.1"]
    assert changed == ["delete 10.96.0.7/32 from kube-dummy-if", "add 10.96.1.1/32 to kube-dummy-if"]
    assert ("10.96.1.1", 32, RT_SCOPE_LINK) in ipr.on(DEV)
    assert ("10.96.0.7", 32, RT_SCOPE_LINK) not in ipr.on(DEV)
    # already there / already gone: no error, nothing to report
    assert applier.apply_changes(["10.96.1.1"], ["10.96.0.7"]) == []


def test_a_failed_change_forgets_the_device_so_the_next_write_reads():
    ipr = FakeLinks()
    applier = VIPApplier(ipr=ipr)
    applier.sync(["10.96.0.1"])
    ipr.links.pop(ipr.index(DEV))              # the device went away behind our back
    with pytest.raises(VIPSyncError, match="10.96.0.2"):
        applier.apply_changes(["10.96.0.2"], [])
    assert not applier.has_applied
    applier.sync(["10.96.0.1", "10.96.0.2"])
    assert {a for a, _, _ in ipr.on(DEV)} >= {"10.96.0.1", "10.96.0.2"}
