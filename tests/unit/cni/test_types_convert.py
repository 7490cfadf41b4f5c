"""Results converted to and from every supported cniVersion."""
import pytest

from cni import skel, types

INTERNAL = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:00:02", "sandbox": "/var/run/netns/p"}],
    "ips": [{"address": "10.244.0.2/24", "gateway": "10.244.0.1", "interface": 0},
            {"address": "fd00:244::2/64", "gateway": "fd00:244::1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_pre_1_0_results_carry_an_ip_version(version):
    out = types.convert(INTERNAL, version)
    assert out["cniVersion"] == version
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert [ip["address"] for ip in out["ips"]] == ["10.244.0.2/24", "fd00:244::2/64"]
    assert out["interfaces"] == INTERNAL["interfaces"] and out["routes"] == INTERNAL["routes"]
    assert out["dns"] == INTERNAL["dns"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_1_x_results_have_no_ip_version(version):
    out = types.convert(INTERNAL, version)
    assert out["cniVersion"] == version
    assert all("version" not in ip for ip in out["ips"])
    assert {k: v for k, v in out.items() if k != "cniVersion"} == \
        {k: v for k, v in INTERNAL.items() if k != "cniVersion"}


@pytest.mark.parametrize("version", skel.SUPPORTED_VERSIONS)
def test_round_trip_through_every_version(version):
    assert types.to_internal(types.convert(INTERNAL, version), version) == INTERNAL


def test_convert_does_not_modify_its_input():
    before = repr(INTERNAL)
    types.convert(INTERNAL, "0.3.1")
    assert repr(INTERNAL) == before


def test_empty_sections_are_left_out_and_dns_is_always_present():
    out = types.convert({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}, "0.4.0")
    assert out == {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}],
                   "dns": {}}


def test_1_1_0_fields_pass_through():
    result = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 1450,
                                                     "socketPath": "/run/x.sock"}],
              "routes": [{"dst": "10.0.0.0/8", "table": 100, "mtu": 1400, "scope": 253}]}
    internal = types.to_internal(result, "1.1.0")
    assert internal["routes"][0]["table"] == 100
    assert types.convert(internal, "1.1.0")["interfaces"][0]["socketPath"] == "/run/x.sock"


@pytest.mark.parametrize("bad, needle", [
    ([], "object"),
    ({"ips": {}}, "ips"),
    ({"ips": [{"gateway": "10.0.0.1"}]}, "ips[0].address"),
    ({"ips": [{"address": "10.0.0.2/24", "interface": -1}]}, "ips[0].interface"),
    ({"ips": [{"address": "10.0.0.2/24", "interface": True}]}, "ips[0].interface"),
    ({"routes": [{"gw": "10.0.0.1"}]}, "routes[0].dst"),
    ({"interfaces": ["eth0"]}, "interfaces"),
    ({"dns": ["8.8.8.8"]}, "dns"),
])
def test_malformed_results_are_rejected_with_the_field(bad, needle):
    with pytest.raises(ValueError, match=__import__("re").escape(needle)):
        types.to_internal(bad, "1.0.0")
