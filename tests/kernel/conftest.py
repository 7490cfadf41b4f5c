"""The kernel tier: tests that need IPVS, dummy interfaces and ipip tunnels.

They run natively where the kernel has all three (a user's distro kernel, or
inside the VM: ``KRT_IN_VM=1``). Otherwise every kernel-tier test collected in
this session runs inside one boot of the Debian-kernel VM (``tests/vm/run``)
and each test here reports its outcome there. With ``CI=true`` a kernel-tier
test that would be skipped fails instead.
"""
from __future__ import annotations

import functools
import os
import pathlib
import subprocess

import pytest

from helpers.netns import Netns
from vm_tier import GuestItem, GuestRun, LOG, skip_or_fail

HERE = pathlib.Path(__file__).resolve().parent


@functools.cache
def missing_kernel_features() -> tuple[str, ...]:
    """The features this kernel lacks, probed once in a throwaway namespace."""
    missing = []
    ns = Netns("probe")
    try:
        if ns.exec("ip link add kd0 type dummy", check=False).returncode != 0:
            missing.append("dummy")
        if ns.exec("ip link add kt0 type ipip local 192.0.2.1 remote 192.0.2.2",
                   check=False).returncode != 0:
            missing.append("ipip")
        if ns.exec("ip link add kb0 type bridge vlan_filtering 1",
                   check=False).returncode != 0:
            missing.append("bridge vlan_filtering")
    finally:
        ns.delete()
    subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    # /proc/net is the reader's namespace; ip_vs registers itself in every one.
    if not os.path.exists("/proc/net/ip_vs"):
        missing.append("ip_vs")
    return tuple(missing)


def _is_kernel_tier(item: pytest.Item) -> bool:
    return HERE in pathlib.Path(str(item.fspath)).resolve().parents


def _in_vm() -> bool:
    return os.environ.get("KRT_IN_VM") == "1"


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only what will run goes to the VM
def pytest_collection_modifyitems(session, config, items):
    kernel = [i for i in items if _is_kernel_tier(i)]
    if not kernel or _in_vm() or os.geteuid() != 0 or not missing_kernel_features():
        return
    guest = GuestRun(config.rootpath, [i.nodeid for i in kernel], missing_kernel_features())
    config._krt_guest = guest
    replaced = {id(i): GuestItem.replacing(i, guest) for i in kernel}
    items[:] = [replaced.get(id(i), i) for i in items]


def pytest_runtest_setup(item):
    if isinstance(item, GuestItem) or not _is_kernel_tier(item) or os.geteuid() != 0:
        return
    missing = missing_kernel_features()
    if missing:
        where = "the VM's kernel" if _in_vm() else "this kernel"
        skip_or_fail(f"{where} lacks {', '.join(missing)}")


def pytest_sessionfinish(session, exitstatus):
    guest = getattr(session.config, "_krt_guest", None)
    if guest is not None and guest.unexplained_exit():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    guest = getattr(config, "_krt_guest", None)
    if guest is None or not guest.started:
        return
    tr = terminalreporter
    tr.section("kernel tier in the Debian-kernel VM")
    if guest.unavailable:
        tr.write_line(guest.unavailable)
        return
    tr.write_line(f"{len(guest.nodeids)} tests in one boot; {guest.timing or 'no timing'}; "
                  f"host wall {guest.wall:.1f} s; full output: {LOG}")
    if guest.unexplained_exit():
        tr.write_line(f"the guest's pytest exited {guest.exit_status} although no test failed "
                      f"(see {LOG})", red=True)
