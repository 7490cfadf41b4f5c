"""Chain names: iptables' 28-character limit is enforced where names are made."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni import names


def test_top_level_names_are_the_reference_plugins():
    # A node moving between the reference plugin and ours keeps one set of shared chains.
    assert names.HOSTPORT_DNAT_CHAIN == "CNI-HOSTPORT-DNAT"
    assert names.HOSTPORT_SETMARK_CHAIN == "CNI-HOSTPORT-SETMARK"
    assert names.HOSTPORT_MASQ_CHAIN == "CNI-HOSTPORT-MASQ"


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=15))
def test_per_container_chain_fits_and_is_recognisable(container_id, ifname):
    chain = names.portmap_dnat_chain(container_id, ifname)
    assert len(chain) == names.CHAIN_NAME_MAX
    assert chain.startswith(names.PORTMAP_DNAT_PREFIX)
    assert names.is_portmap_dnat_chain(chain)
    assert chain == names.portmap_dnat_chain(container_id, ifname)


def test_chain_depends_on_container_and_interface():
    base = names.portmap_dnat_chain("abc", "eth0")
    assert base != names.portmap_dnat_chain("abc", "eth1")
    assert base != names.portmap_dnat_chain("abd", "eth0")
    # The separator keeps ("ab", "ceth0") and ("abc", "eth0") apart.
    assert base != names.portmap_dnat_chain("ab", "ceth0")


def test_hashed_chain_never_exceeds_the_limit():
    assert len(names.hashed_chain("KRT-XYZ-", "a", length=100)) == names.CHAIN_NAME_MAX
    assert names.hashed_chain("P-", "a", length=8) == "P-" + names.hashed_chain("P-", "a")[2:10]
    with pytest.raises(ValueError):
        names.hashed_chain("A-PREFIX-FAR-TOO-LONG-XY", "a")


@pytest.mark.parametrize("bad", ["", "A" * 29, "has space", "-startsdash", 'q"uote', "a!b"])
def test_ensure_chain_name_rejects(bad):
    with pytest.raises(ValueError):
        names.ensure_chain_name(bad)


def test_ensure_chain_name_accepts_28():
    assert names.ensure_chain_name("A" * 28) == "A" * 28


def test_foreign_names_are_not_ours():
    assert not names.is_portmap_dnat_chain("CNI-DN-1234567890abcdef01234")
    assert not names.is_portmap_dnat_chain("KRT-DN-short")
