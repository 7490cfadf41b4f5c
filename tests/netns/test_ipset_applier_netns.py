"""proxyd.kernel.ipset against the real ipset in namespaces the tests made (ipsets are
per network namespace). The applier runs in a thread that entered the node
namespace, as the daemon runs inside the node's.

Topology of the packet tests (both namespaces made by the test, removed after it):

    client (10.32.0.2, fd32::2) eth0 --- eth0 node (10.32.0.1, fd32::1)
                          INPUT: -m set --match-set KUBE-BLOCK src -j REJECT (tcp-reset)
"""
from __future__ import annotations

import itertools
import shutil

import pytest

from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange
from proxyd.kernel.ipset import IPSetApplier, IPSetError
from proxyd.kernel.state import IPSet

pytestmark = pytest.mark.skipif(not (shutil.which("ipset") and shutil.which("iptables")),
                                reason="needs ipset and iptables (Debian packages ipset iptables)")

ADDR = {"inet": ("10.32.0.1", "10.32.0.2", 24), "inet6": ("fd32::1", "fd32::2", 64)}
IPTABLES = {"inet": "iptables", "inet6": "ip6tables"}
_ports = itertools.count(8300)


def owned(name: str) -> bool:
    return name.startswith(("KUBE-", "inet6:KUBE-"))


def block_name(family: str) -> str:
    return "KUBE-BLOCK" if family == "inet" else "inet6:KUBE-BLOCK"


@pytest.fixture
def pair(netns_factory):
    node, client = netns_factory("node"), netns_factory("client")
    veth_pair(node, "eth0", client, "eth0")
    for ns, which in ((node, 0), (client, 1)):
        for family, addrs in ADDR.items():
            ns.exec(["ip", "addr", "add", f"{addrs[which]}/{addrs[2]}", "dev", "eth0", "nodad"])
    # Another program's set: it must come back byte-for-byte after everything.
    node.exec(["ipset", "create", "f2b-sshd", "hash:ip", "timeout", "600", "comment"])
    node.exec(["ipset", "add", "f2b-sshd", "192.0.2.7", "timeout", "0", "comment", "x y"])
    return node, client


def sets(ns) -> list[str]:
    return sorted(ns.exec(["ipset", "list", "-n"]).stdout.split())


def foreign(ns) -> str:
    return ns.exec(["ipset", "save", "f2b-sshd"]).stdout


def connects(client, node, family) -> bool:
    try:
        tcp_exchange(client, node, ADDR[family][0], next(_ports))
        return True
    except ConnectionRefusedError:
        return False


@pytest.mark.parametrize("family", ["inet", "inet6"])
def test_swap_under_a_referenced_set_changes_real_traffic(pair, family):
    node, client = pair
    before = foreign(node)
    name, client_ip = block_name(family), ADDR[family][1]
    other = "10.33.0.0/16" if family == "inet" else "fd33::/48"
    applier = IPSetApplier(owned)
    sync = lambda *entries: node.call(applier.sync_sets,   # noqa: E731
                                      [IPSet(name, "hash:net", family, frozenset(entries))])

    assert sync(other) == 2
    assert sets(node) == sorted(["f2b-sshd", name])
    rule = ["-p", "tcp", "-m", "set", "--match-set", name, "src",
            "-j", "REJECT", "--reject-with", "tcp-reset"]
    node.exec([IPTABLES[family], "-A", "INPUT", *rule])
    assert connects(client, node, family)

    # The client joins the set: rebuilt under the temporary name and swapped in.
    assert sync(other, f"{client_ip}/{'32' if family == 'inet' else '128'}") == 5
    assert not connects(client, node, family)
    assert sync(other, client_ip) == 0, "a /32 (/128) and a bare address are the same entry"

    # Narrowed to a network that still holds the client, then emptied.
    net = "10.32.0.0/24" if family == "inet" else "fd32::/64"
    assert sync(net) == 4
    assert not connects(client, node, family)
    assert sync() == 3
    assert connects(client, node, family)
    assert node.exec(["ipset", "save", name]).stdout.splitlines()[1:] == []

    # The rule kept pointing at the set the whole time, and no temporary set is left.
    node.exec([IPTABLES[family], "-C", "INPUT", *rule])
    assert sets(node) == sorted(["f2b-sshd", name])

    # Still referenced: refused, logged, left for later; gone once the rule is.
    assert node.call(applier.cleanup_stale, []) == []
    assert name in sets(node)
    node.exec([IPTABLES[family], "-D", "INPUT", *rule])
    assert node.call(applier.cleanup_stale, []) == [name]
    assert sets(node) == ["f2b-sshd"]
    assert foreign(node) == before


def test_create_then_no_op_then_leftover_temp_is_cleaned(pair):
    node, _ = pair
    before = foreign(node)
    applier = IPSetApplier(owned)
    desired = [IPSet("KUBE-SRC-A", "hash:ip", "inet", frozenset({"10.0.0.2", "10.0.0.10"})),
               IPSet("inet6:KUBE-SRC-A", "hash:net", "inet6",
                     frozenset({"fd00:0::1/128", "fd00:1::/64"})),
               IPSet("KUBE-SVC", "hash:ip,port", "inet", frozenset({"10.0.0.1,80"}))]
    assert node.call(applier.sync_sets, desired) == 8
    # The kernel lists entries in hash order.
    assert sorted(node.exec(["ipset", "save", "inet6:KUBE-SRC-A"]).stdout.splitlines()[1:]) == \
        ["add inet6:KUBE-SRC-A fd00:1::/64", "add inet6:KUBE-SRC-A fd00::1"]
    assert node.call(applier.sync_sets, desired) == 0

    # An interrupted earlier sync left a filled temporary set behind.
    node.exec(["ipset", "create", "KUBE-SRC-A-tmp", "hash:ip"])
    node.exec(["ipset", "add", "KUBE-SRC-A-tmp", "10.0.0.99"])
    changed = [IPSet("KUBE-SRC-A", "hash:ip", "inet", frozenset({"10.0.0.3"})), *desired[1:]]
    # destroy the leftover; create, add, swap, destroy
    assert node.call(applier.sync_sets, changed) == 1 + 4
    assert node.exec(["ipset", "save", "KUBE-SRC-A"]).stdout.splitlines()[1:] == \
        ["add KUBE-SRC-A 10.0.0.3"]
    assert sets(node) == sorted(["f2b-sshd", "KUBE-SRC-A", "inet6:KUBE-SRC-A", "KUBE-SVC"])
    assert node.call(applier.sync_sets, changed) == 0

    assert node.call(applier.cleanup_stale, ["KUBE-SVC"]) == ["KUBE-SRC-A", "inet6:KUBE-SRC-A"]
    assert sets(node) == ["KUBE-SVC", "f2b-sshd"]
    assert foreign(node) == before


def test_kind_change_of_a_referenced_set_is_refused_naming_it(pair):
    node, _ = pair
    applier = IPSetApplier(owned)
    assert node.call(applier.sync_sets, [IPSet("KUBE-A", "hash:ip", "inet",
                                               frozenset({"10.0.0.1"}))]) == 2
    node.exec(["iptables", "-A", "INPUT", "-m", "set", "--match-set", "KUBE-A", "src",
               "-j", "DROP"])
    with pytest.raises(IPSetError) as caught:
        node.call(applier.sync_sets, [IPSet("KUBE-A", "hash:net", "inet",
                                            frozenset({"10.0.0.0/8"}))])
    assert caught.value.line == "destroy KUBE-A"
    assert "in use by a kernel component" in str(caught.value)
    assert "exists as hash:ip family inet but is wanted as hash:net" in str(caught.value)
    node.exec(["iptables", "-F", "INPUT"])
    assert node.call(applier.sync_sets, [IPSet("KUBE-A", "hash:net", "inet",
                                               frozenset({"10.0.0.0/8"}))]) == 3
    assert node.exec(["ipset", "save", "KUBE-A"]).stdout.split()[2] == "hash:net"


def test_kernel_refuses_a_zero_prefix_as_documented(pair):
    """The quirk behind IPSet's /0 check (and the reason callers split into /1s)."""
    node, _ = pair
    node.exec(["ipset", "create", "KUBE-Z", "hash:net"])
    proc = node.exec(["ipset", "add", "KUBE-Z", "0.0.0.0/0"], check=False)
    assert proc.returncode != 0 and "CIDR" in proc.stderr
    with pytest.raises(ValueError, match="/0"):
        IPSet("KUBE-Z", "hash:net", "inet", frozenset({"0.0.0.0/0"}))
    node.exec(["ipset", "add", "KUBE-Z", "0.0.0.0/1"])
    node.exec(["ipset", "add", "KUBE-Z", "128.0.0.0/1"])
    wanted = IPSet("KUBE-Z", "hash:net", "inet", frozenset({"0.0.0.0/1", "128.0.0.0/1"}))
    assert node.call(IPSetApplier(owned).sync_sets, [wanted]) == 0
