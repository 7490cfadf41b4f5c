"""parse_config of kube-router-bridge: defaults, every field, every supported cniVersion."""
import json

import pytest

from cni import skel
from cni.bridge import add, config
from cni.skel import CniError

VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def conf(version="1.0.0", **fields):
    return {"cniVersion": version, "name": "kubernetes", "type": "kube-router-bridge",
            "ipam": {"type": "kube-router-host-local", "subnet": "10.1.0.0/24"}, **fields}


def error_of(data, cni_args=None) -> CniError:
    with pytest.raises(CniError) as info:
        config.parse_config(data, cni_args)
    return info.value


@pytest.mark.parametrize("version", VERSIONS)
def test_defaults_for_every_supported_version(version):
    c = config.parse_config(json.dumps(conf(version)).encode())
    assert c.cni_version == version
    assert c.bridge == "kube-bridge"
    assert (c.is_gateway, c.is_default_gateway, c.force_address, c.ip_masq) == (False,) * 4
    assert (c.hairpin_mode, c.promisc_mode, c.enable_dad) == (False,) * 3
    assert (c.mtu, c.vlan, c.mac, c.dns) == (0, 0, None, None)
    assert c.ipam == {"type": "kube-router-host-local", "subnet": "10.1.0.0/24"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_field_for_every_supported_version(version):
    c = config.parse_config(conf(
        version, bridge="br9", forceAddress=True, ipMasq=True, mtu=1450,
        hairpinMode=True, vlan=100, enabledad=True, dns={"nameservers": ["10.96.0.10"]},
        unknownField={"ignored": True}))
    assert (c.bridge, c.is_gateway, c.force_address, c.ip_masq) == ("br9", False, True, True)
    assert (c.mtu, c.hairpin_mode, c.vlan, c.enable_dad) == (1450, True, 100, True)
    assert c.dns == {"nameservers": ["10.96.0.10"]}
    assert c.is_default_gateway is False


def test_default_gateway_implies_gateway():
    c = config.parse_config(conf(isDefaultGateway=True))
    assert c.is_gateway and c.is_default_gateway


def test_unsupported_version_is_code_1():
    err = error_of(conf("0.2.0"))
    assert err.code == skel.INCOMPATIBLE_VERSION and "0.2.0" in err.msg


def test_bad_json_is_code_6():
    assert error_of(b"{not json").code == skel.DECODE_FAILURE


@pytest.mark.parametrize("key,value", [
    ("isGateway", "yes"), ("hairpinMode", 1), ("ipMasq", None), ("enabledad", "false"),
    ("mtu", -1), ("mtu", "1500"), ("mtu", True), ("mtu", 70000),
    ("vlan", 4095), ("vlan", -3), ("vlan", 1.5),
    ("bridge", 7), ("bridge", "a-name-longer-than-15"), ("bridge", "br/0"),
    ("ipam", "host-local"), ("dns", ["8.8.8.8"]),
])
def test_invalid_value_is_code_7_naming_key_and_value(key, value):
    err = error_of(conf(**{key: value}))
    assert err.code == skel.INVALID_CONFIG
    assert repr(key) in err.msg and repr(value) in err.msg


def test_hairpin_with_promisc_is_code_7_naming_both():
    err = error_of(conf(hairpinMode=True, promiscMode=True))
    assert err.code == skel.INVALID_CONFIG
    assert "hairpinMode" in err.msg and "promiscMode" in err.msg


def test_macspoofchk_is_unsupported_code_2():
    err = error_of(conf(macspoofchk=True))
    assert err.code == skel.UNSUPPORTED_FIELD and "macspoofchk" in err.msg
    assert config.parse_config(conf(macspoofchk=False)).bridge == "kube-bridge"


def test_mac_priority_cni_args_then_args_then_runtime_config():
    args = {"MAC": "02:00:00:00:00:01"}
    assert config.parse_config(conf(), args).mac == "02:00:00:00:00:01"
    with_args = conf(args={"cni": {"mac": "02:00:00:00:00:02"}})
    assert config.parse_config(with_args, args).mac == "02:00:00:00:00:02"
    with_rc = dict(with_args, runtimeConfig={"mac": "02:00:00:00:00:0A"})
    assert config.parse_config(with_rc, args).mac == "02:00:00:00:00:0a"


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "zz:00:00:00:00:01", "0200000000001", 5])
def test_invalid_mac_is_code_7(mac):
    err = error_of(conf(runtimeConfig={"mac": mac}))
    assert err.code == skel.INVALID_CONFIG and "runtimeConfig.mac" in err.msg


def test_missing_ipam_parses_but_is_none():
    data = conf()
    del data["ipam"]
    assert config.parse_config(data).ipam is None


def test_plan_gateways_follows_the_reference():
    c = config.parse_config(conf(isDefaultGateway=True))
    result = {"ips": [{"address": "10.1.0.5/24"}, {"address": "fd00:1::5/64"},
                      {"address": "10.2.0.5/24", "gateway": "10.2.0.254"}], "routes": []}
    assert add.plan_gateways(result, c) == ["10.1.0.1/24", "fd00:1::1/64", "10.2.0.254/24"]
    assert [ip["interface"] for ip in result["ips"]] == [2, 2, 2]
    assert result["ips"][0]["gateway"] == "10.1.0.1"
    # One default route per family, via the first gateway of that family.
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
                                {"dst": "::/0", "gw": "fd00:1::1"}]


def test_plan_gateways_keeps_an_ipam_default_route():
    c = config.parse_config(conf(isDefaultGateway=True))
    result = {"ips": [{"address": "10.1.0.5/24"}],
              "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.254"}]}
    add.plan_gateways(result, c)
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.254"}]


def test_plan_gateways_without_gateway_adds_nothing():
    c = config.parse_config(conf())
    result = {"ips": [{"address": "10.1.0.5/24"}], "routes": []}
    assert add.plan_gateways(result, c) == []
    assert "gateway" not in result["ips"][0] and result["routes"] == []


@pytest.mark.parametrize("key", ["isGateway", "isDefaultGateway"])
def test_vlan_with_a_gateway_is_unsupported_code_2(key):
    err = error_of(conf(vlan=10, **{key: True}))
    assert err.code == skel.UNSUPPORTED_FIELD and "vlan" in err.msg and "isGateway" in err.msg
