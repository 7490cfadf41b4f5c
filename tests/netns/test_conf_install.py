"""kube-router-cni install: launchers a runtime can exec, a working loopback, a config
the reference plugins accept. Everything runs inside namespaces the test made."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conf import defaults
from helpers.cni_cli import kube_router_cni
from helpers.traffic import connect_through, tcp_exchange

REFERENCE = "/usr/lib/cni"
needs_reference = pytest.mark.skipif(
    not all(os.access(f"{REFERENCE}/{p}", os.X_OK) for p in ("loopback", "bridge", "host-local")),
    reason="needs the reference plugins in /usr/lib/cni (Debian containernetworking-plugins)")


@pytest.fixture
def installed(tmp_path):
    """A node root with the reference plugins where Debian keeps them, after install."""
    shutil.copytree(REFERENCE, tmp_path / REFERENCE.lstrip("/"))
    kube_router_cni("install", "--root", tmp_path, "--pod-cidr", "10.244.9.0/24",
                    "--mtu", "1500", "--plugins", "reference")
    return tmp_path


def exec_plugin(ns, exe, command, stdin="{}", **cni_env):
    # A runtime's environment: no virtualenv, no PYTHONPATH, just CNI_* and PATH.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
           "CNI_PATH": os.path.dirname(exe), **cni_env}
    return subprocess.run(ns.argv([exe]), input=stdin, capture_output=True, text=True,
                          timeout=30, env=env)


@needs_reference
@pytest.mark.parametrize("name", sorted(defaults.LAUNCHERS))
def test_launcher_runs_its_plugin_without_the_venv(installed, host_ns, name):
    exe = installed / "opt/cni/bin" / name
    assert exe.read_text().startswith(f"#!{sys.executable} -IS\n")
    out = exec_plugin(host_ns, str(exe), "VERSION",
                      stdin='{"cniVersion": "1.0.0"}')
    assert "Traceback" not in out.stderr, out.stderr
    reply = json.loads(out.stdout)
    assert out.returncode == 0, reply
    assert "1.0.0" in reply["supportedVersions"] and "1.1.0" in reply["supportedVersions"]


@needs_reference
def test_copied_loopback_brings_lo_up(installed, host_ns, netns_factory):
    pod = netns_factory("pod")
    pod.exec(["ip", "link", "set", "lo", "down"])
    loopback = installed / "opt/cni/bin/loopback"
    out = exec_plugin(host_ns, str(loopback), "ADD",
                      stdin='{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}',
                      CNI_CONTAINERID="c-lo", CNI_NETNS=pod.path, CNI_IFNAME="lo")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "UP" in pod.exec(["ip", "-o", "link", "show", "lo"]).stdout.split("<")[1]
    tcp_exchange(pod, pod, "127.0.0.1", port=0)


@needs_reference
def test_generated_config_gives_a_pod_a_working_address(installed, host_ns, netns_factory):
    """The reference bridge + host-local ADD with the generated bridge entry; packets flow."""
    doc = json.loads((installed / "etc/cni/net.d/10-kuberouter.conflist").read_text())
    bridge = doc["plugins"][0]
    bridge["ipam"]["dataDir"] = str(installed / "var/lib/cni/networks")
    conf = json.dumps(dict(bridge, cniVersion=doc["cniVersion"], name=doc["name"]))
    pod = netns_factory("pod")
    exe = str(installed / "opt/cni/bin/bridge")
    args = dict(CNI_CONTAINERID="c-1", CNI_NETNS=pod.path, CNI_IFNAME="eth0")
    out = exec_plugin(host_ns, exe, "ADD", stdin=conf, **args)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert [ip["address"] for ip in result["ips"]] == ["10.244.9.2/24"]
    link = host_ns.exec(["ip", "-j", "-d", "link", "show", "kube-bridge"]).stdout
    assert json.loads(link)[0]["mtu"] == 1500
    tcp_exchange(pod, host_ns, "10.244.9.1", port=0)
    assert pod.exec(["ip", "route", "show", "default"]).stdout.startswith(
        "default via 10.244.9.1")
    out = exec_plugin(host_ns, exe, "DEL", stdin=conf, **args)
    assert out.returncode == 0, out.stdout + out.stderr


def test_installed_plugins_bring_up_a_pod_from_the_generated_file(tmp_path, host_ns,
                                                                  netns_factory):
    """install + generate (our plugins) into a node root; that exact conflist, run by a
    runtime-style driver with the installed launchers, gives a pod an address, a working
    hostPort and a clean DEL."""
    import uuid

    from krsim.cniruntime import Attachment, CniRuntime

    data_dir = tmp_path / "var/lib/cni/networks"
    kube_router_cni("install", "--root", tmp_path, "--pod-cidr", "10.244.7.0/24",
                    "--mtu", "1500", "--data-dir", data_dir)
    conflist = tmp_path / "etc/cni/net.d/10-kuberouter.conflist"
    bin_dir = str(tmp_path / "opt/cni/bin")
    runtime = CniRuntime.from_file(str(conflist), [bin_dir], node_netns=host_ns.name)
    assert [p["type"] for p in runtime.conflist["plugins"]] == [
        "kube-router-bridge", "kube-router-portmap"]
    pod = netns_factory("pod")
    att = Attachment(uuid.uuid4().hex, pod.path, "eth0",
                     capability_args={"portMappings": [
                         {"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]})
    result = runtime.add(att)
    assert [ip["address"] for ip in result["ips"]] == ["10.244.7.2/24"]
    assert (data_dir / "kubernetes" / "10.244.7.2").exists()
    tcp_exchange(host_ns, pod, "10.244.7.2", port=0)  # node -> pod

    # node -> 127.0.0.1:hostPort -> pod:80
    connect_through(host_ns, pod, ("10.244.7.2", 80), ("127.0.0.1", 8081))

    runtime.delete(att)
    assert not (data_dir / "kubernetes" / "10.244.7.2").exists()
    veths = json.loads(host_ns.exec(["ip", "-j", "link", "show", "type", "veth"]).stdout or "[]")
    assert veths == []
    assert "KRT-DN-" not in host_ns.exec(["iptables-save", "-t", "nat"]).stdout
