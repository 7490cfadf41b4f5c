"""The pure part of host-local: ranges, defaults, the round-robin walk, exhaustion."""
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni import skel
from cni.host_local import allocator, config
from cni.host_local.allocator import build_range, iter_candidates, next_free


def ip(text):
    return int(ipaddress.ip_address(text))


def addrs(candidates):
    return [str(ipaddress.ip_address(a)) if r.version == 4 else str(ipaddress.IPv6Address(a))
            for a, r in candidates]


def test_defaults_skip_network_gateway_and_broadcast():
    r = build_range("10.0.0.0/29")
    assert (str(r), allocator.format_ip(4, r.gateway)) == ("10.0.0.1-10.0.0.6", "10.0.0.1")
    assert addrs(iter_candidates([r], None)) == [f"10.0.0.{i}" for i in range(2, 7)]


def test_ipv6_has_no_broadcast_to_skip():
    r = build_range("fd00::/126")
    assert addrs(iter_candidates([r], None)) == ["fd00::2", "fd00::3"]


def test_round_robin_continues_after_last_reserved_and_wraps():
    r = build_range("10.0.0.0/29")
    assert addrs(iter_candidates([r], ip("10.0.0.4"))) == \
        ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    # last reserved at the end of the range: start over at the beginning
    assert addrs(iter_candidates([r], ip("10.0.0.6")))[0] == "10.0.0.2"


def test_last_reserved_outside_the_set_starts_at_the_beginning():
    r = build_range("10.0.0.0/29")
    assert addrs(iter_candidates([r], ip("192.168.0.9")))[0] == "10.0.0.2"


def test_walk_crosses_ranges_of_a_set_in_order():
    rs = [build_range("10.0.0.0/30"), build_range("10.0.1.0/30")]
    assert addrs(iter_candidates(rs, ip("10.0.0.2"))) == ["10.0.1.2", "10.0.0.2"]
    assert [r is rs[1] for _, r in iter_candidates(rs, None)] == [False, True]


def test_explicit_start_end_and_gateway_inside_the_range():
    r = build_range("10.0.0.0/24", "10.0.0.10", "10.0.0.13", "10.0.0.11")
    assert addrs(iter_candidates([r], None)) == ["10.0.0.10", "10.0.0.12", "10.0.0.13"]


def test_next_free_skips_taken_and_reports_exhaustion():
    r = build_range("10.0.0.0/29")
    taken = {ip(f"10.0.0.{i}") for i in (2, 3, 5)}
    assert next_free([r], taken, None)[0] == ip("10.0.0.4")
    assert next_free([r], taken, ip("10.0.0.4"))[0] == ip("10.0.0.6")
    assert next_free([r], taken | {ip("10.0.0.4"), ip("10.0.0.6")}, None) is None
    assert allocator.free_count([r], taken) == 2


def test_slash_30_has_exactly_one_address():
    r = build_range("10.0.0.0/30")
    assert addrs(iter_candidates([r], None)) == ["10.0.0.2"]
    assert next_free([r], {ip("10.0.0.2")}, None) is None


@pytest.mark.parametrize("subnet", ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"])
def test_too_small_networks_are_refused(subnet):
    with pytest.raises(ValueError, match="too small to allocate from"):
        build_range(subnet)


@pytest.mark.parametrize("subnet, problem", [
    ("10.0.0.0/33", "is not a CIDR"), ("10.0.0.0", "is not a CIDR"), ("banana/24", "is not a CIDR"),
    ("10.0.0.0/255.255.255.0", "is not a CIDR"), ("10.0.0.7/24", "host bits"),
])
def test_bad_subnets(subnet, problem):
    with pytest.raises(ValueError, match=problem):
        build_range(subnet)


def test_huge_ipv6_range_is_walked_lazily():
    r = build_range("fd00::/64")
    assert next_free([r], {ip("fd00::2")}, None)[0] == ip("fd00::3")
    assert next_free([r], set(), ip("fd00::ffff:ffff:ffff:ffff"))[0] == ip("fd00::2")


@settings(max_examples=200, deadline=None)
@given(prefix=st.integers(22, 30), start_off=st.integers(0, 60), data=st.data())
def test_walk_offers_every_allocatable_address_exactly_once(prefix, start_off, data):
    net = ipaddress.ip_network(f"10.1.0.0/{prefix}")
    hosts = [int(a) for a in net.hosts()]  # excludes network and broadcast
    r = build_range(str(net))
    last = data.draw(st.none() | st.sampled_from(hosts))
    seen = [a for a, _ in iter_candidates([r], last)]
    assert sorted(seen) == [a for a in hosts if a != r.gateway]
    assert len(seen) == len(set(seen))
    if last is not None and last != hosts[-1]:
        assert seen[0] == (last + 1 if last + 1 != r.gateway else last + 2)


def _conf(**ipam):
    return {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local", **ipam}}


def test_config_dual_stack_and_legacy_subnet_first():
    conf = config.parse_ipam_conf(_conf(subnet="10.0.0.0/24", gateway="10.0.0.254",
                                        ranges=[[{"subnet": "fd00::/64"}]]), {})
    assert [[str(r) for r in rs] for rs in conf.range_sets] == \
        [["10.0.0.1-10.0.0.254"], ["fd00::1-fd00::ffff:ffff:ffff:ffff"]]
    assert conf.range_sets[0][0].gateway == ip("10.0.0.254")


def test_config_ip_ranges_capability_overrides_ranges():
    c = _conf(ranges=[[{"subnet": "10.0.0.0/24"}]])
    c["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]}
    conf = config.parse_ipam_conf(c, {})
    assert [str(rs[0]) for rs in conf.range_sets] == ["10.9.0.1-10.9.0.254"]


def test_config_requested_ips_from_all_three_sources_in_order():
    c = _conf(ranges=[[{"subnet": "10.0.0.0/24"}]])
    c["args"] = {"cni": {"ips": ["10.0.0.7"]}}
    c["runtimeConfig"] = {"ips": ["10.0.0.8/24", "10.0.0.5"]}
    conf = config.parse_ipam_conf(c, {"IP": "10.0.0.5,fd00::9"})
    assert [allocator.format_ip(*p) for p in conf.requested] == \
        ["10.0.0.5", "fd00::9", "10.0.0.7", "10.0.0.8"]


@pytest.mark.parametrize("ipam, key", [
    ({"ranges": [[{"subnet": "10.0.0.0/33"}]]}, 'ipam.ranges[0][0].subnet: "10.0.0.0/33" is not a CIDR'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]}, "ipam.ranges[0][0]: rangeStart 10.0.1.5 not in network"),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "x"}]]}, 'ipam.ranges[0][0].rangeEnd: "x" is not an IP address'),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}]]}, "ipam.ranges[0][0].gateway"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}, "mixed address families"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}, "overlap"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}, "range set 0 overlaps with range set 1"),
    ({"ranges": [[{"subnet": "10.0.0.0/31"}]]}, "ipam.ranges[0][0]: network 10.0.0.0/31 too small"),
    ({"ranges": []}, "no IP ranges"),
    ({"ranges": [[]]}, "ipam.ranges[0]"),
    ({"subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]}, 'ipam.routes[0].dst: "nope"'),
    ({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "1.2.3"}]}, "ipam.routes[0].gw"),
    ({"subnet": "10.0.0.0/24", "dataDir": 5}, "ipam.dataDir"),
])
def test_config_errors_are_code_7_with_key_and_value(ipam, key):
    with pytest.raises(skel.CniError) as e:
        config.parse_ipam_conf(_conf(**ipam), {})
    assert e.value.code == skel.INVALID_CONFIG
    assert key in str(e.value)


def test_bad_ip_in_cni_args_is_code_4():
    with pytest.raises(skel.CniError) as e:
        config.parse_ipam_conf(_conf(subnet="10.0.0.0/24"), {"IP": "10.0.0.300"})
    assert e.value.code == skel.INVALID_ENV and "CNI_ARGS IP" in str(e.value)
