"""proxyd.kernel.iptables: golden restore text against a stateful iptables-restore --noflush emulator."""
from __future__ import annotations

import pytest

from helpers.xtables import FakeXtables
from lowlevel.xtables import RestoreError
from proxyd.kernel.iptables import NonCanonicalError, TableApplier, canonical_check
from proxyd.kernel.state import Chain, Hook, save_quote


class Lock:
    held = False

    def __enter__(self):
        assert not self.held
        self.held = True

    def __exit__(self, *exc):
        self.held = False


def owned(name: str) -> bool:
    return name.startswith("KR-")


FOREIGN = """*filter
:FOREIGN - [0:0]
:FORWARD DROP [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m comment --comment "someone else" -j FOREIGN
-A FORWARD -j FOREIGN
-A FOREIGN -s 192.0.2.0/24 -j DROP
COMMIT
"""
H_IN = '-m comment --comment "kube-router netpol" -j KR-INPUT'
H_FWD = '-m comment --comment "kube-router netpol" -j KR-FORWARD'
H_IN2 = "-m comment --comment second -j KR-POD"
CHAINS = (Chain("KR-INPUT", ("-m addrtype --dst-type LOCAL -j KR-POD", "-j RETURN")),
          Chain("KR-FORWARD", ("-j KR-POD",)),
          Chain("KR-POD", ('-p tcp -m comment --comment "ns/web" -m tcp --dport 80 -j ACCEPT',
                           "-j REJECT --reject-with icmp-port-unreachable")))
HOOKS = (Hook("INPUT", H_IN), Hook("FORWARD", H_FWD))


@pytest.fixture
def fake():
    lock = Lock()
    xt = FakeXtables(lock=lock)
    xt.seed(FOREIGN)
    xt.seed(FOREIGN.replace("192.0.2.0/24", "2001:db8::/32"), family=6)
    xt.applier_lock = lock
    return xt


def applier(fake, family=4, table="filter"):
    return TableApplier(family, table, owned, run=fake, lock=fake.applier_lock)


def foreign_part(fake, family=4):
    """The save text without any line of ours."""
    return [line for line in fake.save(family, "filter").splitlines() if "KR-" not in line]


def test_first_apply_writes_golden_text_and_keeps_everything_else(fake):
    before = foreign_part(fake)
    a = applier(fake)
    assert a.apply(CHAINS, HOOKS) == 12
    assert fake.restores == ["""*filter
:KR-FORWARD - [0:0]
:KR-INPUT - [0:0]
:KR-POD - [0:0]
-A KR-FORWARD -j KR-POD
-A KR-INPUT -m addrtype --dst-type LOCAL -j KR-POD
-A KR-INPUT -j RETURN
-A KR-POD -p tcp -m comment --comment "ns/web" -m tcp --dport 80 -j ACCEPT
-A KR-POD -j REJECT --reject-with icmp-port-unreachable
-I FORWARD 1 -m comment --comment "kube-router netpol" -j KR-FORWARD
-I INPUT 1 -m comment --comment "kube-router netpol" -j KR-INPUT
COMMIT
"""]
    assert fake.calls == ["iptables-save", "iptables-restore"]
    assert a.last_rewritten == ["FORWARD", "INPUT", "KR-FORWARD", "KR-INPUT", "KR-POD"]
    assert fake.rules("INPUT") == [H_IN, "-i lo -j ACCEPT",
                                   '-m comment --comment "someone else" -j FOREIGN']
    assert foreign_part(fake) == before            # FORWARD's DROP policy included
    assert foreign_part(fake, 6) == [line.replace("192.0.2.0/24", "2001:db8::/32")
                                     for line in before]


def test_unchanged_state_costs_one_save_and_no_restore(fake):
    a = applier(fake)
    a.apply(CHAINS, HOOKS)
    fake.calls.clear()
    assert a.apply(iter(CHAINS), iter(HOOKS)) == 0
    assert fake.calls == ["iptables-save"]
    assert a.last_rewritten == []
    canonical_check(a, CHAINS, HOOKS)


def test_only_the_changed_chain_is_redeclared(fake):
    a = applier(fake)
    a.apply(CHAINS, HOOKS)
    changed = (*CHAINS[:2], Chain("KR-POD", ("-j ACCEPT",)))
    assert a.apply(changed, HOOKS) == 4
    assert fake.restores[-1] == "*filter\n:KR-POD - [0:0]\n-A KR-POD -j ACCEPT\nCOMMIT\n"
    assert a.last_rewritten == ["KR-POD"]
    assert fake.rules("KR-POD") == ["-j ACCEPT"]


def test_removed_chain_is_flushed_unhooked_and_deleted_in_one_transaction(fake):
    a = applier(fake)
    a.apply(CHAINS, HOOKS)
    # Somebody else's chain jumps into ours: the jump is ours to remove.
    fake.seed("*filter\n-A FOREIGN -j KR-FORWARD\nCOMMIT\n")
    kept = (Chain("KR-INPUT", ("-j RETURN",)),)
    assert a.apply(kept, HOOKS[:1]) == 10
    assert fake.restores[-1] == """*filter
:KR-FORWARD - [0:0]
:KR-INPUT - [0:0]
:KR-POD - [0:0]
-A KR-INPUT -j RETURN
-D FOREIGN -j KR-FORWARD
-D FORWARD -m comment --comment "kube-router netpol" -j KR-FORWARD
-X KR-FORWARD
-X KR-POD
COMMIT
"""
    assert a.last_rewritten == ["FOREIGN", "FORWARD", "KR-FORWARD", "KR-INPUT", "KR-POD"]
    assert fake.rules("KR-POD") is None and fake.rules("KR-FORWARD") is None
    assert fake.rules("FOREIGN") == ["-s 192.0.2.0/24 -j DROP"]
    assert a.apply(kept, HOOKS[:1]) == 0


def test_removing_everything_restores_the_table_as_found(fake):
    before = fake.save(4, "filter")
    a = applier(fake)
    a.apply(CHAINS, HOOKS)
    assert a.apply([], []) > 0
    assert fake.save(4, "filter") == before
    assert a.apply([], []) == 0


def test_hook_at_position_three_moves_back_to_one(fake):
    fake.seed(f"*filter\n:KR-INPUT - [0:0]\n-A INPUT {H_IN}\nCOMMIT\n")
    assert fake.rules("INPUT")[2] == H_IN
    a = applier(fake)
    assert a.apply([Chain("KR-INPUT", ())], [Hook("INPUT", H_IN)]) == 4
    assert fake.restores[-1] == f"*filter\n-D INPUT {H_IN}\n-I INPUT 1 {H_IN}\nCOMMIT\n"
    assert a.last_rewritten == ["INPUT"]
    assert fake.rules("INPUT") == [H_IN, "-i lo -j ACCEPT",
                                   '-m comment --comment "someone else" -j FOREIGN']


def test_duplicated_hook_leaves_one_copy_first(fake):
    fake.seed(f"*filter\n:KR-INPUT - [0:0]\n-I INPUT 1 {H_IN}\n-A INPUT {H_IN}\nCOMMIT\n")
    a = applier(fake)
    a.apply([Chain("KR-INPUT", ())], [Hook("INPUT", H_IN)])
    assert fake.restores[-1] == (f"*filter\n-D INPUT {H_IN}\n-D INPUT {H_IN}\n"
                                 f"-I INPUT 1 {H_IN}\nCOMMIT\n")
    assert fake.rules("INPUT").count(H_IN) == 1 and fake.rules("INPUT")[0] == H_IN


def test_hooks_keep_their_given_order_and_correct_leaders_stay(fake):
    chains = [Chain("KR-INPUT", ()), Chain("KR-POD", ())]
    hooks = [Hook("INPUT", H_IN), Hook("INPUT", H_IN2)]
    a = applier(fake)
    a.apply(chains, hooks[:1])
    assert a.apply(chains, hooks) == 3          # the first hook is right: only the second is new
    assert fake.restores[-1] == f"*filter\n-I INPUT 2 {H_IN2}\nCOMMIT\n"
    a.apply(chains, hooks[::-1])
    assert fake.restores[-1] == (f"*filter\n-D INPUT {H_IN}\n-D INPUT {H_IN2}\n"
                                 f"-I INPUT 1 {H_IN2}\n-I INPUT 2 {H_IN}\nCOMMIT\n")
    assert fake.rules("INPUT")[:3] == [H_IN2, H_IN, "-i lo -j ACCEPT"]


def test_a_hook_moved_to_another_builtin_leaves_the_old_one(fake):
    a = applier(fake)
    a.apply([Chain("KR-INPUT", ())], [Hook("INPUT", H_IN)])
    a.apply([Chain("KR-INPUT", ())], [Hook("OUTPUT", H_IN)])
    assert fake.restores[-1] == f"*filter\n-D INPUT {H_IN}\n-I OUTPUT 1 {H_IN}\nCOMMIT\n"
    assert H_IN not in fake.rules("INPUT") and fake.rules("OUTPUT") == [H_IN]


def test_builtin_chains_are_never_declared(fake):
    a = applier(fake)
    for chains, hooks in ((CHAINS, HOOKS), (CHAINS[2:], ()), ((), ())):
        a.apply(chains, hooks)
    declared = {line.split()[0] for text in fake.restores for line in text.splitlines()
                if line.startswith(":")}
    assert declared == {":KR-FORWARD", ":KR-INPUT", ":KR-POD"}
    assert fake.table(4, "filter")["policy"]["FORWARD"] == "DROP"


def test_ipv6_and_nat_are_separate_tables(fake):
    a6 = applier(fake, family=6, table="nat")
    hook = Hook("PREROUTING", "-j KR-DNAT")
    assert a6.apply([Chain("KR-DNAT", ("-j RETURN",))], [hook]) == 5
    assert fake.calls == ["ip6tables-save", "ip6tables-restore"]
    assert fake.rules("PREROUTING", 6, "nat") == ["-j KR-DNAT"]
    assert fake.rules("PREROUTING", 4, "nat") == []
    with pytest.raises(ValueError, match="not a built-in chain of table nat"):
        a6.apply([Chain("KR-DNAT", ())], [Hook("FORWARD", "-j KR-DNAT")])


@pytest.mark.parametrize("chains, hooks, message", [
    ([Chain("KR-" + "X" * 26, ())], [], "has 29 characters: the kernel allows 1 to 28"),
    ([Chain("KR-A B", ())], [], "must not start with '-' or contain blanks"),
    ([Chain("FOREIGN", ())], [], "is not ours"),
    ([Chain("INPUT", ())], [], "is not ours"),
    ([Chain("KR-A", ()), Chain("KR-A", ())], [], "given twice"),
    ([Chain("KR-A", "-j ACCEPT")], [], "not one string"),
    ([Chain("KR-A", ("-j ACCEPT\n-j DROP",))], [], "bad rule text"),
    ([Chain("KR-A", ("-j KR-GONE",))], [], "jumps to KR-GONE, which is not a desired chain"),
    ([], [Hook("INPUT", "-j KR-A")], "jumps to KR-A, which is not a desired chain"),
    ([], [Hook("INPUT", "-j FOREIGN")], "must jump to one of our chains"),
    ([Chain("KR-A", ())], [Hook("INPUT", "-j KR-A")] * 2, "given twice for INPUT"),
])
def test_bad_desired_state_is_refused_before_touching_anything(fake, chains, hooks, message):
    with pytest.raises(ValueError, match=message):
        applier(fake).apply(chains, hooks)
    assert fake.calls == []


def test_a_28_character_name_is_fine(fake):
    name = "KR-" + "X" * 25
    applier(fake).apply([Chain(name, ("-j RETURN",))], [])
    assert fake.rules(name) == ["-j RETURN"]


def test_refused_restore_names_the_line_after_one_retry_and_changes_nothing(fake):
    before = fake.save(4, "filter")
    fake.refuse.add("--bogus")
    with pytest.raises(RestoreError) as err:
        applier(fake).apply([Chain("KR-A", ("-j ACCEPT", "-m bogus --bogus -j DROP"))], [])
    assert (err.value.line_no, err.value.line) == (4, "-A KR-A -m bogus --bogus -j DROP")
    assert fake.calls == ["iptables-save", "iptables-restore"] * 2
    assert fake.save(4, "filter") == before


def test_canonical_check_names_rules_iptables_prints_differently():
    xt = FakeXtables(canonicalize=lambda rule: rule.replace("-s 10.0.0.1 ", "-s 10.0.0.1/32 "))
    a = TableApplier(4, "filter", owned, run=xt, lock=Lock())
    chains = [Chain("KR-A", ("-s 10.0.0.1 -j ACCEPT", "-j RETURN"))]
    with pytest.raises(NonCanonicalError) as err:
        canonical_check(a, chains, [Hook("INPUT", "-s 10.0.0.1 -j KR-A")])
    text = str(err.value)
    assert "a second apply still changes INPUT, KR-A" in text
    assert "KR-A: wrote    -s 10.0.0.1 -j ACCEPT" in text
    assert "KR-A: printed  -s 10.0.0.1/32 -j ACCEPT" in text
    assert "INPUT: printed  -s 10.0.0.1/32 -j KR-A" in text
    assert "-j RETURN" not in text
    canonical_check(a, [Chain("KR-A", ("-s 10.0.0.1/32 -j ACCEPT",))],
                    [Hook("INPUT", "-s 10.0.0.1/32 -j KR-A")])


@pytest.mark.parametrize("value, printed", [
    ("kube-router_netpol-1", "kube-router_netpol-1"),
    ("two words", '"two words"'),
    ("ns/web.1", '"ns/web.1"'),
    ("a:b", '"a:b"'),
    ('say "hi"', r'"say \"hi\""'),
    ("'sq'", r'"\'sq\'"'),
    ("back\\slash", r'"back\\slash"'),
    ("", '""'),
])
def test_save_quote_matches_xtables_save_string(value, printed):
    assert save_quote(value) == printed


def test_unknown_table_is_refused():
    with pytest.raises(ValueError, match="unknown iptables table"):
        TableApplier(4, "filtre", owned)


def test_two_controllers_hooking_one_builtin_do_not_fight_over_position_one(fake):
    """Each keeps its hooks ahead of every foreign rule; the other's hooks are looked
    through, so neither rewrites anything once both have applied."""
    mine = lambda name: name.startswith("KR-A")            # noqa: E731
    theirs = lambda name: name.startswith("KR-B")          # noqa: E731
    either = lambda name: mine(name) or theirs(name)       # noqa: E731
    a = TableApplier(4, "filter", mine, run=fake, lock=fake.applier_lock, siblings=either)
    b = TableApplier(4, "filter", theirs, run=fake, lock=fake.applier_lock, siblings=either)
    state_a = ([Chain("KR-A", ("-j RETURN",))], [Hook("INPUT", "-j KR-A")])
    state_b = ([Chain("KR-B", ("-j RETURN",))], [Hook("INPUT", "-j KR-B"),
                                                  Hook("INPUT", "-m comment --comment b2 -j KR-B")])
    assert a.apply(*state_a) and b.apply(*state_b)
    for _ in range(3):
        assert a.apply(*state_a) == 0 and b.apply(*state_b) == 0
    rules = fake.rules("INPUT")
    assert set(rules[:3]) == {"-j KR-A", "-j KR-B", "-m comment --comment b2 -j KR-B"}
    assert rules.index("-j KR-B") < rules.index("-m comment --comment b2 -j KR-B")
    # a foreign rule pushed to the top is overtaken by both again, still without a fight
    fake.seed("*filter\n-I INPUT 1 -j FOREIGN\nCOMMIT\n")
    a.apply(*state_a)
    b.apply(*state_b)
    assert fake.rules("INPUT")[3] == "-j FOREIGN"
    assert a.apply(*state_a) == 0 and b.apply(*state_b) == 0


def test_apply_changes_rewrites_only_the_given_chains_without_reading(fake):
    a = applier(fake)
    a.apply(CHAINS, [Hook("INPUT", H_IN), Hook("FORWARD", H_FWD)])
    foreign = foreign_part(fake)
    fake.calls.clear()
    written = a.apply_changes({"KR-POD": ("-s 10.0.0.9/32 -j ACCEPT", "-j DROP"),
                               "KR-NEW": ("-j RETURN",), "KR-INPUT": CHAINS[0].rules})
    assert fake.calls == ["iptables-restore"]          # no iptables-save
    assert fake.restores[-1] == ("*filter\n:KR-NEW - [0:0]\n:KR-POD - [0:0]\n"
                                 "-A KR-NEW -j RETURN\n-A KR-POD -s 10.0.0.9/32 -j ACCEPT\n"
                                 "-A KR-POD -j DROP\nCOMMIT\n")
    assert written == 7 and a.last_rewritten == ["KR-NEW", "KR-POD"]
    assert a.apply_changes({"KR-NEW": None, "KR-GONE": None}) == 4
    assert fake.restores[-1] == "*filter\n:KR-NEW - [0:0]\n-X KR-NEW\nCOMMIT\n"
    assert a.apply_changes({"KR-POD": ("-s 10.0.0.9/32 -j ACCEPT", "-j DROP")}) == 0
    assert fake.calls == ["iptables-restore", "iptables-restore"]
    assert foreign_part(fake) == foreign and "KR-NEW" not in fake.table(4, "filter")["chains"]
    # what the changes left is what a reading apply finds: it writes nothing
    final = [CHAINS[0], CHAINS[1], Chain("KR-POD", ("-s 10.0.0.9/32 -j ACCEPT", "-j DROP"))]
    assert a.apply(final, [Hook("INPUT", H_IN), Hook("FORWARD", H_FWD)]) == 0


def test_apply_changes_refuses_dangling_jumps_and_forgets_after_a_failure(fake):
    a = applier(fake)
    with pytest.raises(RuntimeError, match="apply\\(\\) first"):
        a.apply_changes({"KR-POD": ("-j RETURN",)})
    a.apply(CHAINS, [Hook("INPUT", H_IN)])
    with pytest.raises(ValueError, match="jumps to KR-MISSING"):
        a.apply_changes({"KR-POD": ("-j KR-MISSING",)})
    with pytest.raises(ValueError, match="not ours"):
        a.apply_changes({"FOREIGN": ("-j RETURN",)})
    fake.refuse.add("--bogus")
    with pytest.raises(RestoreError):
        a.apply_changes({"KR-POD": ("-m bogus --bogus -j RETURN",)})
    assert not a.has_applied
    with pytest.raises(RuntimeError):
        a.apply_changes({"KR-POD": ("-j RETURN",)})


def test_a_long_chain_with_one_rule_more_or_less_is_edited_in_place(fake):
    a = applier(fake)
    jumps = tuple(f"-s 10.0.0.{i}/32 -j KR-POD" for i in range(2, 12))
    a.apply([Chain("KR-FORWARD", ("-j RETURN",) + jumps), CHAINS[2]], [Hook("FORWARD", H_FWD)])
    grown = ("-j RETURN",) + jumps[:3] + ("-s 10.0.1.1/32 -j KR-POD",) + jumps[4:]
    assert a.apply_changes({"KR-FORWARD": grown}) == 4
    assert fake.restores[-1] == ("*filter\n-D KR-FORWARD -s 10.0.0.5/32 -j KR-POD\n"
                                 "-I KR-FORWARD 5 -s 10.0.1.1/32 -j KR-POD\nCOMMIT\n")
    assert fake.table(4, "filter")["chains"]["KR-FORWARD"] == list(grown)
    reordered = ("-j RETURN",) + tuple(reversed(grown[1:]))
    a.apply_changes({"KR-FORWARD": reordered})                # another order: rewritten whole
    assert fake.restores[-1].startswith("*filter\n:KR-FORWARD - [0:0]\n")
    assert fake.table(4, "filter")["chains"]["KR-FORWARD"] == list(reordered)
    assert a.apply([Chain("KR-FORWARD", reordered), CHAINS[2]], [Hook("FORWARD", H_FWD)]) == 0
