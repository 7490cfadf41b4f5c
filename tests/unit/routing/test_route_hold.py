"""RouteHold: routes survive a restart of BGP until peers caught up, within a bound."""
from proxyd.routing.hold import HeldPath, RouteHold

A, B, EXT = "10.0.0.2", "10.0.0.3", "192.0.2.1"
PA, PB = HeldPath("10.244.1.0/24", A, A), HeldPath("10.244.2.0/24", B, B)


def prefixes(paths):
    return [p.prefix for p in paths]


def test_found_in_the_kernel_kept_until_every_peer_caught_up():
    hold = RouteHold(bound=90, settle=2)
    hold.adopt([(PA.prefix, A), ("10.244.9.0/24", EXT)], now=0)
    # gobgpd just started: nothing learned, no session up.
    assert prefixes(hold.paths([], [A, B], {}, now=0.1)) == ["10.244.1.0/24", "10.244.9.0/24"]
    assert hold.next_check([A, B], now=0.1) == 89.9
    # A is up and re-announces its prefix; B is not up yet: 10.244.9.0/24 stays.
    assert prefixes(hold.paths([PA], [A, B], {A: True}, now=6)) == [PA.prefix, "10.244.9.0/24"]
    assert hold.next_check([A, B], now=6) == 2     # A settles at 8
    hold.paths([PA], [A, B], {A: True, B: True}, now=8)
    # Both caught up (established for 2 s): what nobody announces goes.
    assert prefixes(hold.paths([PA], [A, B], {A: True, B: True}, now=10)) == [PA.prefix]
    assert hold.held == [] and hold.next_check([A, B], now=10) is None


def test_a_peer_that_goes_quiet_keeps_its_routes_for_the_bound():
    hold = RouteHold(bound=30, settle=2)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=0)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=5)       # both caught up
    # B's session drops and its paths are withdrawn: the kernel keeps them.
    assert prefixes(hold.paths([PA], [A, B], {A: True}, now=10)) == [PA.prefix, PB.prefix]
    assert hold.held == [PB]
    # B comes back but has not settled: still kept, then B re-announces.
    assert prefixes(hold.paths([PA], [A, B], {A: True, B: True}, now=20)) == [PA.prefix,
                                                                             PB.prefix]
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=23)
    # Now a withdrawal from a caught-up B is real: gone at once.
    assert prefixes(hold.paths([PA], [A, B], {A: True, B: True}, now=24)) == [PA.prefix]


def test_the_bound_ends_a_hold():
    hold = RouteHold(bound=30, settle=2)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=0)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=5)
    assert PB in hold.paths([PA], [A, B], {A: True}, now=10)
    assert hold.next_check([A, B], now=10) == 30
    assert PB in hold.paths([PA], [A, B], {A: True}, now=39)
    assert PB not in hold.paths([PA], [A, B], {A: True}, now=40.5)


def test_a_peer_no_longer_wanted_loses_its_routes_at_once():
    hold = RouteHold(bound=30, settle=2)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=0)
    hold.paths([PA, PB], [A, B], {A: True, B: True}, now=5)
    assert prefixes(hold.paths([PA], [A], {A: True}, now=6)) == [PA.prefix]
    # Found in the kernel via an address no wanted peer has (a Node gone while the
    # daemon was down, or a next hop a peer named): kept only until the peers caught up.
    hold = RouteHold(bound=30, settle=2)
    hold.adopt([(PB.prefix, B)], now=0)
    assert prefixes(hold.paths([PA], [A], {A: True}, now=1)) == [PA.prefix, PB.prefix]
    assert prefixes(hold.paths([PA], [A], {A: True}, now=3)) == [PA.prefix]


def test_a_changed_next_hop_replaces_the_held_one():
    hold = RouteHold(bound=30, settle=2)
    hold.adopt([(PA.prefix, "10.0.0.99")], now=0)
    assert hold.paths([PA], [A], {A: True}, now=1) == [PA]
