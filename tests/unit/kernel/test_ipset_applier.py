"""The ipset applier against a stateful ipset emulator: golden restore text,
canonical comparison, temporary-set leftovers, refusals and their messages."""
from __future__ import annotations

import ipaddress
import logging

import pytest

from proxyd.kernel.ipset import (IPSetApplier, IPSetError, build_restore, parse_save, sizing,
                                 temp_name)
from proxyd.kernel.state import IPSet
from tests.helpers.ipset import FakeIpset, Result

OURS = "KUBE-"


def owned(name: str) -> bool:
    return name.startswith((OURS, "inet6:" + OURS))


@pytest.fixture
def kernel():
    fake = FakeIpset()
    # Another program's sets: must come back byte-for-byte after everything.
    fake.add_set("f2b-sshd", "hash:ip", "inet", ["192.0.2.7 timeout 0"], "timeout 600")
    fake.add_set("cali40all-hosts", "hash:net", "inet", ['10.9.0.0/16 comment "x y"'],
                 "comment")
    return fake


def foreign_lines(fake):
    return [line for line in fake.save().splitlines() if not owned(line.split()[1])]


FOREIGN = ["create f2b-sshd hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 "
           "initval 0x1 timeout 600",
           "add f2b-sshd 192.0.2.7 timeout 0",
           "create cali40all-hosts hash:net family inet hashsize 1024 maxelem 65536 "
           "bucketsize 12 initval 0x1 comment",
           'add cali40all-hosts 10.9.0.0/16 comment "x y"']


def test_creates_missing_sets_in_one_restore_with_golden_text(kernel):
    applier = IPSetApplier(owned, run=kernel)
    desired = [
        IPSet("KUBE-SRC-B", "hash:net", "inet",
              frozenset({"10.0.0.10", "10.0.0.2/32", "10.1.0.0/16"})),
        IPSet("inet6:KUBE-SRC-B", "hash:ip", "inet6", frozenset({"fd00:0::2", "fd00::1"})),
        IPSet("KUBE-DST-A", "hash:ip,port", "inet", frozenset({"10.0.0.1,80", "10.0.0.1,udp:53"})),
    ]
    assert applier.sync_sets(desired) == 10
    assert kernel.calls == [["ipset", "save"], ["ipset", "restore"]]
    assert kernel.restores == ["""\
create KUBE-DST-A hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-DST-A 10.0.0.1,tcp:80
add KUBE-DST-A 10.0.0.1,udp:53
create KUBE-SRC-B hash:net family inet hashsize 1024 maxelem 65536
add KUBE-SRC-B 10.0.0.2
add KUBE-SRC-B 10.0.0.10
add KUBE-SRC-B 10.1.0.0/16
create inet6:KUBE-SRC-B hash:ip family inet6 hashsize 1024 maxelem 65536
add inet6:KUBE-SRC-B fd00::1
add inet6:KUBE-SRC-B fd00::2
"""]
    assert kernel.entries("KUBE-SRC-B") == ["10.0.0.10", "10.0.0.2", "10.1.0.0/16"]
    assert foreign_lines(kernel) == FOREIGN


def test_changed_set_is_rebuilt_under_temp_name_and_swapped(kernel):
    kernel.add_set("KUBE-SRC-A", "hash:net", "inet", ["10.0.0.1", "10.0.0.2"])
    kernel.refs.add("KUBE-SRC-A")           # an iptables rule points at it
    applier = IPSetApplier(owned, run=kernel)
    desired = [IPSet("KUBE-SRC-A", "hash:net", "inet", frozenset({"10.0.0.2", "10.0.3.0/24"}))]
    assert applier.sync_sets(desired) == 5
    assert kernel.restores[-1] == (
        "create KUBE-SRC-A-tmp hash:net family inet hashsize 1024 maxelem 65536\n"
        "add KUBE-SRC-A-tmp 10.0.0.2\n"
        "add KUBE-SRC-A-tmp 10.0.3.0/24\n"
        "swap KUBE-SRC-A-tmp KUBE-SRC-A\n"
        "destroy KUBE-SRC-A-tmp\n")
    assert kernel.entries("KUBE-SRC-A") == ["10.0.0.2", "10.0.3.0/24"]
    assert sorted(n for n in kernel.sets if owned(n)) == ["KUBE-SRC-A"]
    # Converged: the next sync reads once and writes nothing.
    kernel.calls.clear()
    assert applier.sync_sets(desired) == 0
    assert kernel.calls == [["ipset", "save"]]
    assert foreign_lines(kernel) == FOREIGN


@pytest.mark.parametrize("kind, family, kernel_has, wanted", [
    ("hash:net", "inet", ["10.0.0.1", "10.1.0.0/16"], {"10.0.0.1/32", "10.1.2.3/16"}),
    ("hash:net", "inet6", ["fd00::1", "fd00::/64"], {"fd00:0:0::1/128", "FD00:0::0/64"}),
    ("hash:ip", "inet6", ["fd00::1"], {"fd00:0000::0001"}),
    ("hash:ip", "inet", ["10.0.0.1"], {"10.0.0.1/32"}),
    ("hash:ip,port", "inet", ["10.0.0.1,tcp:80"], {"10.0.0.1,80"}),
])
def test_equal_entries_in_other_spellings_are_a_no_op(kernel, kind, family, kernel_has, wanted):
    name = "inet6:KUBE-X" if family == "inet6" else "KUBE-X"
    kernel.add_set(name, kind, family, kernel_has)
    before = kernel.save()
    assert IPSetApplier(owned, run=kernel).sync_sets([IPSet(name, kind, family,
                                                            frozenset(wanted))]) == 0
    assert kernel.restores == [] and kernel.save() == before


def test_leftover_temp_set_from_an_interrupted_sync_is_destroyed_first(kernel):
    kernel.add_set("KUBE-SRC-A", "hash:ip", "inet", ["10.0.0.1"])
    kernel.add_set("KUBE-SRC-A-tmp", "hash:ip", "inet", ["10.0.0.9"])   # crashed mid-rewrite
    kernel.add_set("KUBE-OLD-tmp", "hash:net", "inet", [])
    applier = IPSetApplier(owned, run=kernel)
    desired = [IPSet("KUBE-SRC-A", "hash:ip", "inet", frozenset({"10.0.0.2"}))]
    assert applier.sync_sets(desired) == 6
    assert kernel.restores[-1].splitlines()[:2] == ["destroy KUBE-OLD-tmp",
                                                    "destroy KUBE-SRC-A-tmp"]
    assert kernel.entries("KUBE-SRC-A") == ["10.0.0.2"]
    assert sorted(n for n in kernel.sets if owned(n)) == ["KUBE-SRC-A"]
    assert applier.sync_sets(desired) == 0


def test_half_applied_restore_converges_on_the_next_sync(kernel):
    kernel.add_set("KUBE-A", "hash:ip", "inet", ["10.0.0.1"])
    applier = IPSetApplier(owned, run=kernel)
    desired = [IPSet("KUBE-A", "hash:ip", "inet", frozenset({"10.0.0.2", "10.0.0.3"}))]
    # An interruption after the temp set was created and partly filled.
    lines = build_restore(desired, parse_save(kernel.save(), owned))
    for line in lines[:2]:
        kernel.apply(line.split())
    assert applier.sync_sets(desired) == 6
    assert kernel.entries("KUBE-A") == ["10.0.0.2", "10.0.0.3"]
    assert applier.sync_sets(desired) == 0


def test_kind_change_of_an_unreferenced_set_recreates_it_after_everything_else(kernel):
    kernel.add_set("KUBE-A", "hash:ip", "inet", ["10.0.0.1"])
    applier = IPSetApplier(owned, run=kernel)
    desired = [IPSet("KUBE-A", "hash:net", "inet", frozenset({"10.0.0.0/8"})),
               IPSet("KUBE-B", "hash:ip", "inet", frozenset({"10.0.0.1"}))]
    assert applier.sync_sets(desired) == 5
    assert kernel.restores[-1].splitlines() == [
        "create KUBE-B hash:ip family inet hashsize 1024 maxelem 65536",
        "add KUBE-B 10.0.0.1",
        "destroy KUBE-A",
        "create KUBE-A hash:net family inet hashsize 1024 maxelem 65536",
        "add KUBE-A 10.0.0.0/8"]
    assert kernel.sets["KUBE-A"]["kind"] == "hash:net"


def test_kind_change_of_a_referenced_set_raises_naming_the_line_and_the_set(kernel):
    kernel.add_set("KUBE-A", "hash:ip", "inet", ["10.0.0.1"])
    kernel.refs.add("KUBE-A")
    applier = IPSetApplier(owned, run=kernel)
    desired = [IPSet("KUBE-A", "hash:net", "inet", frozenset({"10.0.0.0/8"})),
               IPSet("KUBE-B", "hash:ip", "inet", frozenset({"10.0.0.1"}))]
    with pytest.raises(IPSetError) as caught:
        applier.sync_sets(desired)
    err = caught.value
    assert (err.line_no, err.line) == (3, "destroy KUBE-A")
    text = str(err)
    assert "ipset restore failed at line 3: destroy KUBE-A" in text
    assert "in use by a kernel component" in text
    assert ">  3  destroy KUBE-A" in text and "   2  add KUBE-B 10.0.0.1" in text
    assert "exists as hash:ip family inet but is wanted as hash:net family inet" in text
    # Everything else converged; the referenced set was left as it was.
    assert kernel.entries("KUBE-B") == ["10.0.0.1"]
    assert kernel.sets["KUBE-A"]["kind"] == "hash:ip"


def test_other_restore_failures_name_the_line_without_a_kind_hint():
    def run(argv, input=None):
        if argv[1:] == ["save"]:
            return Result(stdout="")
        return Result(1, stderr="ipset v7.17: Error in line 2: Hash is full, cannot add more\n")
    applier = IPSetApplier(owned, run=run)
    with pytest.raises(IPSetError) as caught:
        applier.sync_sets([IPSet("KUBE-A", "hash:ip", "inet", frozenset({"10.0.0.1"}))])
    assert caught.value.line == "add KUBE-A 10.0.0.1"
    assert "Hash is full" in str(caught.value) and "wanted as" not in str(caught.value)


def test_a_failing_save_raises_with_its_stderr():
    def run(argv, input=None):
        return Result(1, stderr="ipset v7.17: Kernel error received: Operation not permitted\n")
    with pytest.raises(IPSetError, match="ipset save failed .1.: .*Operation not permitted"):
        IPSetApplier(owned, run=run).sync_sets([])


def test_cleanup_stale_leaves_referenced_sets_for_later_and_never_touches_foreign(kernel, caplog):
    for name in ("KUBE-A", "KUBE-B", "KUBE-C", "KUBE-D", "KUBE-KEEP"):
        kernel.add_set(name, "hash:ip", "inet", ["10.0.0.1"])
    kernel.refs.add("KUBE-B")
    applier = IPSetApplier(owned, run=kernel)
    with caplog.at_level(logging.WARNING, logger="proxyd.kernel.ipset"):
        assert applier.cleanup_stale(["KUBE-KEEP"]) == ["KUBE-A", "KUBE-C", "KUBE-D"]
    assert "ipset KUBE-B is still referenced" in caplog.text
    assert sorted(n for n in kernel.sets if owned(n)) == ["KUBE-B", "KUBE-KEEP"]
    kernel.refs.discard("KUBE-B")
    assert applier.cleanup_stale(["KUBE-KEEP"]) == ["KUBE-B"]
    assert applier.cleanup_stale(["KUBE-KEEP"]) == []
    assert foreign_lines(kernel) == FOREIGN


def test_sizes_grow_with_the_entries(kernel):
    entries = frozenset(str(ipaddress.ip_address(0x0A000000 + i)) for i in range(70000))
    applier = IPSetApplier(owned, run=kernel)
    assert applier.sync_sets([IPSet("KUBE-BIG", "hash:ip", "inet", entries)]) == 70001
    assert kernel.restores[-1].startswith(
        "create KUBE-BIG hash:ip family inet hashsize 32768 maxelem 131072\n")
    assert len(kernel.sets["KUBE-BIG"]["entries"]) == 70000
    assert sizing(0) == (1024, 65536)
    assert sizing(65537) == (32768, 131072)


def test_names_and_entries_are_validated_with_clear_errors():
    with pytest.raises(ValueError, match="/0 in hash:net; split it into two /1"):
        IPSet("KUBE-A", "hash:net", "inet", frozenset({"0.0.0.0/0"}))
    with pytest.raises(ValueError, match="/0 in hash:net"):
        IPSet("inet6:KUBE-A", "hash:net", "inet6", frozenset({"::/0"}))
    with pytest.raises(ValueError, match="1..31 characters"):
        IPSet("KUBE-" + "X" * 27, "hash:ip", "inet")
    with pytest.raises(ValueError, match="without whitespace"):
        IPSet("KUBE- A", "hash:ip", "inet")
    with pytest.raises(ValueError, match="a hash:ip set would hold each of its 256"):
        IPSet("KUBE-A", "hash:ip", "inet", frozenset({"10.0.0.0/24"}))
    with pytest.raises(ValueError, match="not an IPv6"):
        IPSet("inet6:KUBE-A", "hash:ip", "inet6", frozenset({"10.0.0.1"}))
    with pytest.raises(ValueError, match="not an IPv4 network"):
        IPSet("KUBE-A", "hash:net", "inet", frozenset({"fd00::/64"}))
    with pytest.raises(ValueError, match="numeric port"):
        IPSet("KUBE-A", "hash:ip,port", "inet", frozenset({"10.0.0.1,tcp:http"}))
    with pytest.raises(ValueError, match="kind 'list:set'"):
        IPSet("KUBE-A", "list:set", "inet")
    assert IPSet("KUBE-A", "hash:net", "inet", frozenset({"10.0.0.1/32"})) == \
        IPSet("KUBE-A", "hash:net", "inet", frozenset({"10.0.0.1"}))


def test_desired_sets_must_be_owned_unique_and_not_temporary(kernel):
    applier = IPSetApplier(owned, run=kernel)
    with pytest.raises(ValueError, match="owned"):
        applier.sync_sets([IPSet("other", "hash:ip", "inet")])
    with pytest.raises(ValueError, match="temporary"):
        applier.sync_sets([IPSet("KUBE-A-tmp", "hash:ip", "inet")])
    with pytest.raises(ValueError, match="wanted twice"):
        applier.sync_sets([IPSet("KUBE-A", "hash:ip", "inet"), IPSet("KUBE-A", "hash:net", "inet")])
    assert kernel.restores == []


def test_temp_names_keep_the_prefix_and_the_length_limit():
    assert temp_name("KUBE-SRC-A") == "KUBE-SRC-A-tmp"
    long = "inet6:KUBE-SRC-ABCDEFGHIJKLMNOP"
    assert len(long) == 31
    assert temp_name(long) == "inet6:KUBE-SRC-ABCDEFGHIJKL-tmp"
    assert len(temp_name(long)) == 31 and owned(temp_name(long))


def test_parse_save_reads_only_owned_sets():
    text = ("create f2b hash:ip family inet hashsize 1024 maxelem 65536\n"
            "add f2b 1.2.3.4\n"
            "create KUBE-A hash:net family inet6 hashsize 1024 maxelem 65536 bucketsize 12\n"
            "add KUBE-A fd00::/64\n"
            "add KUBE-A fd00::1 comment \"a b\"\n"
            "create KUBE-L list:set size 8\n"
            "add KUBE-L KUBE-A\n")
    saved = parse_save(text, owned)
    assert sorted(saved) == ["KUBE-A", "KUBE-L"]
    assert (saved["KUBE-A"].kind, saved["KUBE-A"].family) == ("hash:net", "inet6")
    assert saved["KUBE-A"].entries == {"fd00::/64", "fd00::1"}
    assert (saved["KUBE-L"].kind, saved["KUBE-L"].entries) == ("list:set", {"KUBE-A"})


def test_kernel_text_in_another_spelling_is_parsed_before_deciding_to_rewrite():
    saved = parse_save("create KUBE-A hash:net family inet6 hashsize 1024 maxelem 65536\n"
                       "add KUBE-A FD00:0::1/128\n"
                       "add KUBE-A fd00:1:0::/64\n", owned)
    same = IPSet("KUBE-A", "hash:net", "inet6", frozenset({"fd00::1", "fd00:1::/64"}))
    assert build_restore([same], saved) == []
    other = IPSet("KUBE-A", "hash:net", "inet6", frozenset({"fd00::2", "fd00:1::/64"}))
    assert build_restore([other], saved)[-2:] == ["swap KUBE-A-tmp KUBE-A", "destroy KUBE-A-tmp"]


def test_apply_changes_writes_entry_deltas_without_reading(kernel):
    applier = IPSetApplier(owned, run=kernel)
    peers = IPSet("KUBE-SRC-A", "hash:net", "inet", frozenset({"10.0.0.1", "10.0.0.2"}))
    applier.sync_sets([peers])
    kernel.calls.clear()
    moved = peers.changed(["10.0.0.3"], ["10.0.0.1"])
    fresh = IPSet("KUBE-DST-B", "hash:ip", "inet", frozenset({"10.0.0.9"}))
    assert applier.apply_changes([moved, fresh]) == 4
    assert kernel.calls == [["ipset", "restore", "-exist"]]          # no ipset save
    assert kernel.restores[-1] == (
        "create KUBE-DST-B hash:ip family inet hashsize 1024 maxelem 65536\n"
        "add KUBE-DST-B 10.0.0.9\ndel KUBE-SRC-A 10.0.0.1\nadd KUBE-SRC-A 10.0.0.3\n")
    assert kernel.entries("KUBE-SRC-A") == ["10.0.0.2", "10.0.0.3"]
    assert applier.apply_changes([moved]) == 0
    assert applier.destroy(["KUBE-DST-B", "f2b-sshd"]) == ["KUBE-DST-B"]   # foreign: never
    assert foreign_lines(kernel) == FOREIGN
    # what the changes left is what a reading sync finds: it writes nothing
    assert applier.sync_sets([moved]) == 0


def test_apply_changes_needs_a_reading_sync_and_forgets_after_a_failure(kernel):
    applier = IPSetApplier(owned, run=kernel)
    s = IPSet("KUBE-SRC-A", "hash:net", "inet", frozenset({"10.0.0.1"}))
    with pytest.raises(RuntimeError, match="sync_sets\\(\\) first"):
        applier.apply_changes([s])
    applier.sync_sets([s])
    kernel.sets["KUBE-SRC-A"]["maxelem"] = 1                           # full: refuses an add
    with pytest.raises(IPSetError, match="Hash is full"):
        applier.apply_changes([s.changed(["10.0.0.2"])])
    assert not applier.has_applied
