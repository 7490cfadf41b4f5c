"""proxyd.kernel.iptables against real iptables/ip6tables (nf_tables) in namespaces the tests made.

Topology of the packet test (both namespaces made by the test, removed after it):

    client (10.31.0.2, fd31::2) eth0 --- eth0 node (10.31.0.1, fd31::1)
                                              our chain hooked into INPUT
"""
from __future__ import annotations

import itertools
import re
import shutil

import pytest

from lowlevel.xtables import FileLock, RestoreError, run_command
from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange
from proxyd.kernel import iptables as kipt
from proxyd.kernel.iptables import TableApplier, canonical_check
from proxyd.kernel.state import Chain, Hook

pytestmark = pytest.mark.skipif(not (shutil.which("iptables-restore") and shutil.which("ipset")),
                                reason="needs iptables and ipset (Debian packages iptables ipset)")

SAVE = {4: "iptables-save", 6: "ip6tables-save"}
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
FOREIGN = """*filter
:FOREIGN - [0:0]
:FORWARD DROP [0:0]
-A INPUT -i lo -m comment --comment "someone else's" -j ACCEPT
-A INPUT -j FOREIGN
-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
-A FOREIGN -p udp -m udp --dport 53 -j ACCEPT
COMMIT
"""
HOOK_IN = Hook("INPUT", '-m comment --comment "kube-router netpol" -j KR-INPUT')
HOOK_FWD = Hook("FORWARD", '-m comment --comment "kube-router netpol" -j KR-FORWARD')
_ports = itertools.count(8000)


def owned(name: str) -> bool:
    return name.startswith("KR-")


def runner(ns):
    """The applier's command runner, executing inside ``ns``."""
    def run(argv, input=None):
        return run_command(["ip", "netns", "exec", ns.name, *argv], input)
    return run


def make_applier(ns, family, tmp_path, table="filter"):
    return TableApplier(family, table, owned, run=runner(ns), lock=FileLock(str(tmp_path / "lock")))


def saved(ns, family, table="filter") -> list[str]:
    """iptables-save of one table without comments and counters."""
    out = ns.exec([SAVE[family], "-t", table]).stdout
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in out.splitlines()
            if not line.startswith("#")]


def reject(family: int) -> str:
    return f"-j REJECT --reject-with icmp{'6' if family == 6 else ''}-port-unreachable"


def canonical_pairs(family: int) -> list[tuple[str, str]]:
    """The (written, printed) pairs documented at the top of proxyd.kernel.iptables."""
    suffix = "6" if family == 6 else ""
    written = [line.strip()[len(f"in{suffix}:"):].strip() for line in kipt.__doc__.splitlines()
               if line.strip().startswith(f"in{suffix}:")]
    printed = [line.strip()[len(f"out{suffix}:"):].strip() for line in kipt.__doc__.splitlines()
               if line.strip().startswith(f"out{suffix}:")]
    assert written and len(written) == len(printed)
    return list(zip(written, printed))


@pytest.mark.parametrize("family", [4, 6])
def test_documented_canonical_forms_round_trip(netns_factory, tmp_path, family):
    ns = netns_factory("ipt")
    ns.exec(["ipset", "create", "KRT-PROBE", "hash:ip", "family", "inet" if family == 4 else "inet6"])
    pairs = canonical_pairs(family)
    a = make_applier(ns, family, tmp_path)
    a.apply([Chain("KR-PROBE", tuple(w for w, _ in pairs))], [])
    got = [line[len("-A KR-PROBE "):] for line in saved(ns, family) if line.startswith("-A KR-PROBE ")]
    for (written, printed), line in zip(pairs, got, strict=True):
        assert line == printed, f"{SAVE[family]} now prints {written!r} as {line!r}"
    canonical_check(a, [Chain("KR-PROBE", tuple(p for _, p in pairs))], [])


@pytest.mark.parametrize("family", [4, 6])
def test_converges_and_leaves_foreign_state_byte_for_byte(netns_factory, tmp_path, family):
    ns = netns_factory("ipt")
    ns.exec([RESTORE[family], "--noflush", "-w"], input=FOREIGN)
    before = saved(ns, family)
    a = make_applier(ns, family, tmp_path)
    chains = [Chain("KR-INPUT", ("-p tcp -m tcp --dport 9 -j KR-POD", "-j RETURN")),
              Chain("KR-FORWARD", ("-j KR-POD",)),
              Chain("KR-POD", ('-m comment --comment "ns/web" -j ACCEPT', reject(family)))]
    hooks = [HOOK_IN, HOOK_FWD]

    assert a.apply(chains, hooks) > 0
    after = saved(ns, family)
    assert [line for line in after if "KR-" not in line] == before
    for hook in hooks:
        assert [line for line in after if line.startswith(f"-A {hook.builtin} ")][0] == \
            f"-A {hook.builtin} {hook.rule}"
    assert a.apply(chains, hooks) == 0 and a.last_rewritten == []

    # Another program puts its rule in front of ours: the next sync moves ours back to 1.
    ns.exec([SAVE[family].replace("-save", ""), "-I", "INPUT", "1", "-p", "tcp", "-j", "ACCEPT"])
    ns.exec([SAVE[family].replace("-save", ""), "-I", "FORWARD", "1", "-p", "udp", "-j", "ACCEPT"])
    assert a.apply(chains, hooks) == 6
    assert a.last_rewritten == ["FORWARD", "INPUT"]
    rules = [line for line in saved(ns, family) if line.startswith("-A INPUT ")]
    assert rules[:2] == [f"-A INPUT {HOOK_IN.rule}", "-A INPUT -p tcp -j ACCEPT"]
    assert a.apply(chains, hooks) == 0

    # One chain changes: only it is rewritten; then all of ours go.
    chains[2] = Chain("KR-POD", (reject(family),))
    assert a.apply(chains, hooks) == 4 and a.last_rewritten == ["KR-POD"]
    ns.exec([SAVE[family].replace("-save", ""), "-D", "INPUT", "-p", "tcp", "-j", "ACCEPT"])
    ns.exec([SAVE[family].replace("-save", ""), "-D", "FORWARD", "-p", "udp", "-j", "ACCEPT"])
    assert a.apply([], []) > 0
    assert saved(ns, family) == before
    assert a.apply([], []) == 0


def test_refused_transaction_names_the_line_and_changes_nothing(netns_factory, tmp_path):
    ns = netns_factory("ipt")
    ns.exec(["iptables-restore", "--noflush", "-w"], input=FOREIGN)
    before = saved(ns, 4)
    a = make_applier(ns, 4, tmp_path)
    with pytest.raises(RestoreError) as err:
        a.apply([Chain("KR-A", ("-j ACCEPT",)), Chain("KR-B", ("-m set --match-set KRT-NONE src",))],
                [Hook("INPUT", "-j KR-A")])
    assert err.value.line == "-A KR-B -m set --match-set KRT-NONE src"
    assert saved(ns, 4) == before


@pytest.fixture
def pair(netns_factory):
    node, client = netns_factory("node"), netns_factory("client")
    veth_pair(node, "eth0", client, "eth0")
    node.sh("ip addr add 10.31.0.1/24 dev eth0 && ip addr add fd31::1/64 dev eth0 nodad")
    client.sh("ip addr add 10.31.0.2/24 dev eth0 && ip addr add fd31::2/64 dev eth0 nodad")
    return node, client


@pytest.mark.parametrize("family, node_ip, client_ip",
                         [(4, "10.31.0.1", "10.31.0.2"), (6, "fd31::1", "fd31::2")])
def test_packets_follow_the_chain_as_it_changes(pair, tmp_path, family, node_ip, client_ip):
    node, client = pair
    tool = SAVE[family].replace("-save", "")
    # A foreign rule refusing the ports; our hook sits in front of it.
    node.exec([tool, "-A", "INPUT", "-p", "tcp", "--dport", "8000:8999", *reject(family).split()])

    def exchange():
        return tcp_exchange(client, node, node_ip, next(_ports))

    with pytest.raises(ConnectionRefusedError):
        exchange()
    a = make_applier(node, family, tmp_path)
    ports = "-p tcp -m tcp --dport 8000:8999"
    allow = [Chain("KR-INPUT", (f"{ports} -j ACCEPT",))]
    deny = [Chain("KR-INPUT", (f"{ports} {reject(family)}",))]

    assert a.apply(allow, [Hook("INPUT", "-j KR-INPUT")]) > 0
    assert exchange() == client_ip
    assert a.apply(deny, [Hook("INPUT", "-j KR-INPUT")]) == 4
    with pytest.raises(ConnectionRefusedError):
        exchange()
    assert a.apply(allow, [Hook("INPUT", "-j KR-INPUT")]) == 4
    assert exchange() == client_ip
    assert a.apply([], []) > 0
    with pytest.raises(ConnectionRefusedError):
        exchange()
    assert not [line for line in saved(node, family) if "KR-" in line]


@pytest.mark.parametrize("family", (4, 6))
def test_changes_edit_a_long_chain_in_place_and_converge(netns_factory, tmp_path, family):
    ns = netns_factory("ipt")
    a = make_applier(ns, family, tmp_path)
    host = "10.0.0.{}/32" if family == 4 else "fd00::{}/128"
    jumps = tuple(f"-s {host.format(i)} -m comment --comment \"pod {i}\" -j KR-POD"
                  for i in range(2, 22))
    pod, first = Chain("KR-POD", ("-j RETURN",)), "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    a.apply([Chain("KR-FORWARD", (first,) + jumps), pod], [HOOK_FWD])
    grown = ((first,) + jumps[:4] + (f"-s {host.format(99)} -m comment --comment "
                                     f"\"pod 99\" -j KR-POD",) + jumps[5:])
    assert a.apply_changes({"KR-FORWARD": grown}) == 4           # one -D, one -I: no flush
    assert [line[len("-A KR-FORWARD "):] for line in saved(ns, family)
            if line.startswith("-A KR-FORWARD ")] == list(grown)
    assert a.apply([Chain("KR-FORWARD", grown), pod], [HOOK_FWD]) == 0
