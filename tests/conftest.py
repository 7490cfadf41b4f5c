"""Shared fixtures and the three test tiers.

A test's tier is the directory it lives in: ``tests/unit``, ``tests/netns``,
``tests/kernel``. The marker is applied here so a test cannot land in the
wrong tier by forgetting a decorator.
"""
from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from helpers import netns as nsl

TIERS = ("unit", "netns", "kernel")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = pathlib.Path(str(item.fspath)).resolve().relative_to(ROOT / "tests")
        tier = rel.parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_setup(item):
    if (item.get_closest_marker("netns") or item.get_closest_marker("kernel")):
        if os.geteuid() != 0:
            pytest.skip("needs root: creates network namespaces")
        if not shutil.which("ip"):
            pytest.skip("needs iproute2's ip command (the README's test command installs it)")


def _can_check_leaks() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def pytest_sessionstart(session):
    # Namespaces that exist before the run are not ours to judge (another
    # run on the same machine, or a leftover from before).
    session.config._krt_before = set(nsl.leaked_namespaces()) if _can_check_leaks() else set()


def pytest_sessionfinish(session, exitstatus):
    if not _can_check_leaks():
        return
    leaked = sorted(set(nsl.leaked_namespaces()) - session.config._krt_before)
    if leaked:
        session.config._krt_leaks = leaked
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaked = getattr(config, "_krt_leaks", None)
    if leaked:
        terminalreporter.section("leaked test state", red=True)
        terminalreporter.write_line("network namespaces left behind: " + ", ".join(leaked))


@pytest.fixture
def netns_factory():
    """Make namespaces by role; every one is removed after the test, pass or fail."""
    made: list[nsl.Netns] = []

    def make(role: str = "ns") -> nsl.Netns:
        ns = nsl.Netns(role)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


@pytest.fixture
def host_ns(netns_factory):
    """A private "host" namespace with forwarding on: stands in for the node.

    Plugins and daemons run inside it, so the machine's own ip_forward,
    iptables and links are never changed by a test.
    """
    ns = netns_factory("host")
    ns.sysctl("net.ipv4.ip_forward", 1)
    ns.sysctl("net.ipv6.conf.all.forwarding", 1)
    return ns
