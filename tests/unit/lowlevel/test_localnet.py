"""The localnet guard's restore text: in place once, first in raw PREROUTING, never fighting
the daemon's copy."""
from lowlevel import localnet
from lowlevel.xtables import SavedTable

JUMP, DAEMON_JUMP = f"-j {localnet.PLUGIN_CHAIN}", f"-j {localnet.DAEMON_CHAIN}"


def raw(prerouting, guard=True):
    chains = {"PREROUTING": list(prerouting), "OUTPUT": []}
    if guard:
        chains[localnet.PLUGIN_CHAIN] = list(localnet.guard_rules())
    return SavedTable("raw", chains)


def test_an_empty_table_gets_the_chain_and_the_jump_first():
    text = localnet.build_guard_restore(raw([], guard=False))
    assert text.splitlines() == [
        "*raw", f":{localnet.PLUGIN_CHAIN} - [0:0]",
        *(f"-A {localnet.PLUGIN_CHAIN} {rule}" for rule in localnet.guard_rules()),
        f"-I PREROUTING 1 {JUMP}", "COMMIT"]
    assert all("! -i lo" in rule and rule.endswith("-j DROP") for rule in localnet.guard_rules())


def test_in_place_means_nothing_to_write():
    assert localnet.build_guard_restore(raw([JUMP, "-j CT --notrack"])) == ""
    # The daemon's guard ahead of ours is fine: neither moves the other.
    assert localnet.build_guard_restore(raw([DAEMON_JUMP, JUMP, "-j ACCEPT"])) == ""


def test_a_rule_ahead_of_the_guard_moves_it_first():
    text = localnet.build_guard_restore(raw(["-j ACCEPT", JUMP]))
    assert text.splitlines()[1:] == [f"-D PREROUTING {JUMP}", f"-I PREROUTING 1 {JUMP}",
                                     "COMMIT"]


def test_a_changed_chain_is_rewritten_and_duplicates_go():
    saved = raw([JUMP, JUMP])
    saved.chains[localnet.PLUGIN_CHAIN] = ["-j ACCEPT"]
    lines = localnet.build_guard_restore(saved).splitlines()
    assert f":{localnet.PLUGIN_CHAIN} - [0:0]" in lines
    assert lines.count(f"-D PREROUTING {JUMP}") == 2 and lines.count(f"-I PREROUTING 1 {JUMP}") == 1
