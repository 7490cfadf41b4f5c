"""portmap configuration: defaults, case-insensitive portMappings, every invalid value -> code 7."""
import pytest

from cni import names, skel
from cni.portmap import config, plugin
from cni.portmap.config import PortMapping


def conf(**extra):
    base = {"cniVersion": "1.0.0", "name": "kubernetes", "type": "kube-router-portmap"}
    base.update(extra)
    return base


def maps(*entries):
    return {"runtimeConfig": {"portMappings": list(entries)}}


def test_defaults_match_the_reference_plugin():
    c = config.parse_config(conf())
    assert c.mappings == ()
    assert c.snat is True and c.masq_all is False
    assert c.mark_bit == 13 and c.external_setmark_chain == ""
    assert c.conditions == ((), ())


def test_lowercase_keys_as_podman_sends_them():
    c = config.parse_config(conf(**maps(
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""})))
    assert c.mappings == (PortMapping(8080, 80, "tcp", ""),)


def test_capitalised_keys_as_containerd_sends_them():
    c = config.parse_config(conf(**maps(
        {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP", "HostIP": "192.0.2.7"})))
    assert c.mappings == (PortMapping(5353, 53, "udp", "192.0.2.7"),)


def test_protocol_defaults_to_tcp_and_host_ip_is_normalised():
    c = config.parse_config(conf(**maps(
        {"hostPort": 1, "containerPort": 65535},
        {"hostport": 2, "CONTAINERPORT": 3, "protocol": "Sctp", "hostip": "2001:DB8:0::1"})))
    assert c.mappings == (PortMapping(1, 65535, "tcp", ""),
                          PortMapping(2, 3, "sctp", "2001:db8::1"))


def test_options_and_unknown_fields():
    c = config.parse_config(conf(snat=False, masqAll=True, markMasqBit=0,
                                  conditionsV4=["!", "-s", "10.0.0.0/8"],
                                  conditionsV6=["-d", "fd00::/8"],
                                  capabilities={"portMappings": True},
                                  somethingNew={"x": 1}))
    assert (c.snat, c.masq_all, c.mark_bit) == (False, True, 0)
    assert c.conditions == (("!", "-s", "10.0.0.0/8"), ("-d", "fd00::/8"))


def test_external_setmark_chain():
    c = config.parse_config(conf(externalSetMarkChain="KUBE-MARK-MASQ"))
    assert c.external_setmark_chain == "KUBE-MARK-MASQ"


BAD_MAPPINGS = [
    ({"hostPort": 0, "containerPort": 80}, "hostPort", "0"),
    ({"hostPort": 65536, "containerPort": 80}, "hostPort", "65536"),
    ({"hostPort": -1, "containerPort": 80}, "hostPort", "-1"),
    ({"hostPort": "80", "containerPort": 80}, "hostPort", "'80'"),
    ({"hostPort": True, "containerPort": 80}, "hostPort", "True"),
    ({"containerPort": 80}, "hostPort", "None"),
    ({"hostPort": 80, "containerPort": 0}, "containerPort", "0"),
    ({"hostPort": 80, "ContainerPort": 70000}, "containerPort", "70000"),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "protocol", "'icmp'"),
    ({"hostPort": 80, "containerPort": 80, "protocol": 6}, "protocol", "6"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "300.1.1.1"}, "hostIP", "'300.1.1.1'"),
    ({"hostPort": 80, "containerPort": 80, "HostIP": "localhost"}, "hostIP", "'localhost'"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": 7}, "hostIP", "7"),
]


@pytest.mark.parametrize("entry,key,value", BAD_MAPPINGS)
def test_invalid_mapping_is_code_7_naming_key_and_value(entry, key, value):
    with pytest.raises(skel.CniError) as err:
        config.parse_config(conf(**maps(entry)))
    assert err.value.code == skel.INVALID_CONFIG
    assert key in err.value.msg and value in err.value.msg


BAD_OPTIONS = [
    ({"markMasqBit": 32}, "markMasqBit", "32"),
    ({"markMasqBit": -1}, "markMasqBit", "-1"),
    ({"markMasqBit": "13"}, "markMasqBit", "'13'"),
    ({"snat": "yes"}, "snat", "'yes'"),
    ({"masqAll": 1}, "masqAll", "1"),
    ({"conditionsV4": "-s 10.0.0.0/8"}, "conditionsV4", "'-s 10.0.0.0/8'"),
    ({"conditionsV6": [1]}, "conditionsV6", "[1]"),
    ({"externalSetMarkChain": "A" * 29}, "externalSetMarkChain", "A" * 29),
    ({"externalSetMarkChain": "has space"}, "externalSetMarkChain", "'has space'"),
    ({"runtimeConfig": []}, "runtimeConfig", "[]"),
    ({"runtimeConfig": {"portMappings": {"hostPort": 1}}}, "portMappings", "hostPort"),
    ({"runtimeConfig": {"portMappings": [80]}}, "portMappings", "80"),
]


@pytest.mark.parametrize("extra,key,value", BAD_OPTIONS)
def test_invalid_option_is_code_7_naming_key_and_value(extra, key, value):
    with pytest.raises(skel.CniError) as err:
        config.parse_config(conf(**extra))
    assert err.value.code == skel.INVALID_CONFIG
    assert key in err.value.msg and value in err.value.msg


def test_mark_bit_and_external_chain_exclude_each_other():
    with pytest.raises(skel.CniError) as err:
        config.parse_config(conf(markMasqBit=13, externalSetMarkChain="KUBE-MARK-MASQ"))
    assert err.value.code == skel.INVALID_CONFIG
    assert "externalSetMarkChain" in err.value.msg and "markMasqBit" in err.value.msg


def test_container_nets_take_the_first_address_of_each_family():
    nets = config.container_nets({"ips": [
        {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
        {"address": "10.1.0.6/24"},
        {"address": "fd00:1::5/64", "interface": 2}]})
    assert {f: str(n) for f, n in nets.items()} == {4: "10.1.0.5/24", 6: "fd00:1::5/64"}
    assert config.container_nets(None) == {}


def test_bad_prev_result_address_is_code_7():
    with pytest.raises(skel.CniError) as err:
        config.container_nets({"ips": [{"address": "10.1.0.500/24"}]})
    assert err.value.code == skel.INVALID_CONFIG and "10.1.0.500" in err.value.msg


def test_add_and_check_need_a_prev_result():
    req = skel.Request("ADD", container_id="c1", netns="/run/netns/x", ifname="eth0",
                       conf=conf(**maps({"hostPort": 80, "containerPort": 80})))
    for cmd in (plugin.cmd_add, plugin.cmd_check):
        with pytest.raises(skel.CniError) as err:
            cmd(req)
        assert err.value.code == skel.INVALID_CONFIG and "prevResult" in err.value.msg


def test_add_without_mappings_passes_the_prev_result_through_untouched():
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 0}]}
    req = skel.Request("ADD", container_id="c1", netns="/run/netns/x", ifname="eth0",
                       conf=conf(), prev_result=prev)
    assert plugin.cmd_add(req) == prev


def test_mark_mask_text():
    assert names.mark_mask(13) == "0x2000/0x2000"
    assert names.mark_mask(0) == "0x1/0x1"
    assert names.mark_mask(31) == "0x80000000/0x80000000"
    with pytest.raises(ValueError):
        names.mark_mask(32)
