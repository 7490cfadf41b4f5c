"""lowlevel.ipnet against the standard library's ipaddress, which it stands in for."""
import ipaddress
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lowlevel import ipnet

v4_ints = st.integers(0, 2**32 - 1)
# Plenty of zero hextets, so the "::" rules (longest run, first of equal runs,
# runs at either end, single zeros) and IPv4-mapped/-compatible forms all come up.
hextets = st.one_of(st.just(0), st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF))
v6_ints = st.one_of(
    st.integers(0, 2**128 - 1),
    st.lists(hextets, min_size=8, max_size=8).map(
        lambda hs: int.from_bytes(b"".join(h.to_bytes(2, "big") for h in hs), "big")),
    v4_ints.map(lambda v: 0xFFFF << 32 | v),
    v4_ints)
addresses = st.one_of(v4_ints.map(ipaddress.IPv4Address), v6_ints.map(ipaddress.IPv6Address))


def texts_of(addr):
    """Ways to spell ``addr`` that ipaddress accepts: compressed, exploded, upper case,
    and for IPv6 with an embedded dotted-quad tail."""
    out = [str(addr), addr.exploded, addr.exploded.upper()]
    if addr.version == 6:
        head = addr.exploded.rsplit(":", 2)[0]
        out.append(f"{head}:{ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)}")
    return out


@settings(max_examples=3000)
@given(addresses)
@example(ipaddress.ip_address("::"))
@example(ipaddress.ip_address("::ffff:1.2.3.4"))
@example(ipaddress.ip_address("::1.2.3.4"))
@example(ipaddress.ip_address("1:0:0:1:0:0:0:1"))
@example(ipaddress.ip_address("1:0:0:2:0:0:3:4"))
@example(ipaddress.ip_address("0:1:0:1:0:1:0:1"))
def test_text_packed_and_int_match_ipaddress(want):
    for text in texts_of(want):
        got = ipnet.ip_address(text)
        assert (got.version, int(got), got.packed, str(got)) == \
            (want.version, int(want), want.packed, str(want)), text
    assert ipnet.ip_address(want.packed) == got
    assert got.max_prefixlen == want.max_prefixlen
    assert got.is_unspecified == want.is_unspecified
    mapped = want.ipv4_mapped if want.version == 6 else None
    assert (got.ipv4_mapped and str(got.ipv4_mapped)) == (mapped and str(mapped))


@settings(max_examples=2000)
@given(st.one_of(st.tuples(v4_ints, st.integers(0, 32), st.just(4)),
                 st.tuples(v6_ints, st.integers(0, 128), st.just(6))))
def test_networks_and_interfaces_match_ipaddress(case):
    value, prefixlen, version = case
    addr = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    text = f"{addr}/{prefixlen}"
    want_net, want_if = ipaddress.ip_network(text, strict=False), ipaddress.ip_interface(text)
    net, iface = ipnet.ip_network(text, strict=False), ipnet.ip_interface(text)
    assert (str(net), net.prefixlen, net.version, net.max_prefixlen) == \
        (str(want_net), want_net.prefixlen, want_net.version, want_net.max_prefixlen)
    for name in ("network_address", "broadcast_address", "netmask"):
        assert str(getattr(net, name)) == str(getattr(want_net, name)), name
    assert (str(iface), iface.with_prefixlen, str(iface.ip), str(iface.network), iface.version) == \
        (str(want_if), want_if.with_prefixlen, str(want_if.ip), str(want_if.network),
         want_if.version)
    assert iface.ip in net and net.network_address in iface.network
    if prefixlen:
        outside = int(want_net.network_address) ^ (1 << (want_net.max_prefixlen - prefixlen))
        assert ipnet.Address(version, outside) not in net
    assert ipnet.ip_network(str(want_net)) == net       # strict: no host bits left


# Random strings over the characters of address text: whatever ipaddress accepts
# (zones aside) must parse to the same value, and whatever it refuses must fail here too.
address_chars = st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45)


@settings(max_examples=5000)
@given(address_chars)
@example("1.2.3.04")
@example("1:2:3:4:5:6:7::")
@example("::1:2:3:4:5:6:7")
@example("1::2:3:4:5:6:7:8")
@example("::ffff:1.2.3.4")
@example("1.2.3.4::")
@example("00001::")
@example(":::")
def test_validity_of_any_text_matches_ipaddress(text):
    try:
        want = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
            ipnet.ip_address(text)
    else:
        got = ipnet.ip_address(text)
        assert (got.version, int(got)) == (want.version, int(want))


@pytest.mark.parametrize("text", [
    "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "fd00::/129",
    "fd00::/255.255.0.0", "10.0.0.0/255.0.255.0", "10.0.0.0/8/8", "", "/8", "10.0.0.0/٨",
    "x/8", "10.0.0.0\0/8"])
def test_invalid_prefixes_are_refused_like_ipaddress(text):
    for parse, kind in ((ipaddress.ip_network, "network"), (ipaddress.ip_interface, "interface")):
        with pytest.raises(ValueError):
            parse(text, strict=False) if kind == "network" else parse(text)
    with pytest.raises(ValueError, match=f"does not appear to be an IPv4 or IPv6 network"):
        ipnet.ip_network(text, strict=False)
    with pytest.raises(ValueError, match=f"does not appear to be an IPv4 or IPv6 interface"):
        ipnet.ip_interface(text)


@pytest.mark.parametrize("text", ["10.1.2.3/255.255.0.0", "10.1.2.3/0.0.255.255",
                                  "10.1.2.3/024", "10.1.2.3/0", "10.1.2.3"])
def test_ipv4_masks_and_bare_addresses_are_accepted_like_ipaddress(text):
    assert str(ipnet.ip_interface(text)) == str(ipaddress.ip_interface(text))
    assert str(ipnet.ip_network(text, strict=False)) == \
        str(ipaddress.ip_network(text, strict=False))


def test_strict_network_refuses_host_bits():
    with pytest.raises(ValueError, match="10.0.0.1/24 has host bits set"):
        ipnet.ip_network("10.0.0.1/24")


def test_zones_and_non_text_are_refused():
    # Go's ParseIP refuses zones too; iptables and netlink cannot use them.
    for value in ("fe80::1%eth0", None, 7, b"\x01\x02\x03"):
        with pytest.raises(ValueError):
            ipnet.ip_address(value)


def test_arithmetic_ordering_and_families_stay_apart():
    a = ipnet.ip_address("10.0.0.255")
    assert str(a + 1) == "10.0.1.0" and a < a + 1 and sorted([a + 1, a]) == [a, a + 1]
    with pytest.raises(ValueError):
        ipnet.ip_address("255.255.255.255") + 1
    assert ipnet.ip_address("::a00:1") != ipnet.ip_address("10.0.0.1")
    assert ipnet.ip_address("::a00:1") not in ipnet.ip_network("10.0.0.0/8")
    assert len({ipnet.ip_interface("10.0.0.1/24"), ipnet.ip_interface("10.0.0.1/24"),
                ipnet.ip_interface("10.0.0.1/16")}) == 2


def test_importing_it_loads_no_heavy_modules():
    code = (f"import sys; sys.path.insert(0, {_project_root()!r}); import lowlevel.ipnet; "
            "print(sorted({'ipaddress', 'functools', 'collections', 'enum', 'socket'}"
            " & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def _project_root():
    import os
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
