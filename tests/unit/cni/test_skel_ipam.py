"""IPAM delegation: the reference plugin by exec, ours in-process, errors carried over."""
import json

import pytest

from cni import ipam, skel
from cnirun import disk_state


def request(conf, command="ADD", path=("/usr/lib/cni",), cid="c1"):
    return skel.Request(command=command, container_id=cid, netns="/var/run/netns/x",
                        ifname="eth0", args={}, path=path, stdin=json.dumps(conf).encode(),
                        conf=conf, version=conf["cniVersion"])


def bridge_conf(data_dir, ipam_type, version="0.4.0", subnet="10.7.0.0/24"):
    return {"cniVersion": version, "name": "net1", "type": "kube-router-bridge",
            "ipam": {"type": ipam_type, "dataDir": str(data_dir), "subnet": subnet}}


@pytest.mark.parametrize("ipam_type", ["host-local", "kube-router-host-local"])
def test_add_check_del_through_delegation(reference, tmp_path, ipam_type):
    conf = bridge_conf(tmp_path, ipam_type)
    req = request(conf)
    result = ipam.exec_add(req, conf["ipam"])
    # the internal form whatever the version spoken on the wire (0.4.0 here)
    assert result["ips"] == [{"address": "10.7.0.2/24", "gateway": "10.7.0.1"}]
    assert disk_state(tmp_path)["10.7.0.2"] == b"c1\r\neth0"
    checked = dict(conf, prevResult=result)
    ipam.exec_check(request(checked, "CHECK"), conf["ipam"])
    ipam.exec_del(request(conf, "ADD"), conf["ipam"])  # the command is set by the call
    assert "10.7.0.2" not in disk_state(tmp_path)


@pytest.mark.parametrize("ipam_type", ["host-local", "kube-router-host-local"])
def test_delegated_error_becomes_cni_error(reference, tmp_path, ipam_type):
    conf = bridge_conf(tmp_path, ipam_type, subnet="10.7.0.0/30")
    ipam.exec_add(request(conf, cid="a"), conf["ipam"])
    with pytest.raises(skel.CniError) as e:
        ipam.exec_add(request(conf, cid="b"), conf["ipam"])
    assert "no IP addresses available" in e.value.msg
    assert e.value.code == (999 if ipam_type == "host-local" else skel.TRY_AGAIN_LATER)


def test_rewritten_ipam_section_is_what_the_plugin_sees(reference, tmp_path):
    conf = bridge_conf(tmp_path, "host-local")
    pod_cidr = dict(conf["ipam"], subnet="10.8.0.0/24")
    assert ipam.exec_add(request(conf), pod_cidr)["ips"][0]["address"] == "10.8.0.2/24"


def test_missing_plugin_and_bad_type_are_code_7(tmp_path):
    conf = bridge_conf(tmp_path, "no-such-ipam")
    with pytest.raises(skel.CniError) as e:
        ipam.exec_add(request(conf, path=(str(tmp_path),)), conf["ipam"])
    assert e.value.code == skel.INVALID_CONFIG and "no-such-ipam" in e.value.msg
    for bad in ({"type": "../bin/sh"}, {}):
        with pytest.raises(skel.CniError) as e:
            ipam.exec_add(request(conf), bad)
        assert e.value.code == skel.INVALID_CONFIG and "ipam.type" in e.value.msg


def test_in_process_call_spawns_nothing_and_needs_no_cni_path(tmp_path, monkeypatch):
    import subprocess

    def no_exec(*a, **kw):
        raise AssertionError("kube-router-host-local must be called in-process")
    monkeypatch.setattr(subprocess, "run", no_exec)
    conf = bridge_conf(tmp_path, "kube-router-host-local", version="1.1.0")
    result = ipam.exec_add(request(conf, path=()), conf["ipam"])
    assert result["ips"][0]["address"] == "10.7.0.2/24"
