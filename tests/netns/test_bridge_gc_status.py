"""kube-router-bridge GC and STATUS (CNI 1.1), exec'ed inside a private node namespace.

GC must release what the plugin owns for attachments the runtime no longer knows
(leases through IPAM, ipMasq chains) and nothing else; STATUS says whether an ADD
can succeed, passing IPAM's answer through.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from cni.names import ipmasq_chain
from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange

BIN = pathlib.Path(sys.executable).parent
BRIDGE = str(BIN / "kube-router-bridge")
NETWORK = "kubernetes"


def bridge_conf(data_dir, *, version="1.1.0", ranges=None, **fields) -> dict:
    conf = {"cniVersion": version, "name": NETWORK, "type": "kube-router-bridge",
            "bridge": "kbr0", "isDefaultGateway": True, "ipMasq": True,
            "ipam": {"type": "kube-router-host-local", "dataDir": str(data_dir),
                     "ranges": ranges or [[{"subnet": "10.88.0.0/24"}]]}}
    conf.update(fields)
    return conf


def cni(host_ns, command, conf, *, netns="", cid="", ifname="eth0"):
    """Exec the bridge in ``host_ns`` as a runtime does; (exit status, parsed stdout).

    GC and STATUS get only CNI_COMMAND and CNI_PATH, the parameters the spec gives them.
    """
    env = {"CNI_COMMAND": command, "CNI_PATH": f"{BIN}:/usr/lib/cni", "PATH": os.environ["PATH"]}
    if command not in ("GC", "STATUS"):
        env.update(CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME=ifname)
    proc = host_ns.exec([BRIDGE], input=json.dumps(conf), env=env, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def add(host_ns, conf, pod, cid) -> dict:
    rc, out = cni(host_ns, "ADD", conf, netns=pod.path, cid=cid)
    assert rc == 0, out
    return out


def gc(host_ns, conf, *valid_ids):
    attachments = [{"containerID": cid, "ifname": "eth0"} for cid in valid_ids]
    return cni(host_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": attachments}))


def leases(data_dir) -> list[str]:
    return sorted(p.name for p in pathlib.Path(data_dir).rglob("*")
                  if p.is_file() and p.name.count(".") == 3)


def nat_chains(host_ns) -> dict[str, list[str]]:
    """{chain: rules} of the node's nat table, as iptables-save prints them."""
    chains: dict[str, list[str]] = {}
    for line in host_ns.exec("iptables-save -t nat").stdout.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            chains.setdefault(chain, []).append(rule)
    return chains


def jumps_to(chains, target) -> list[str]:
    return [r for r in chains.get("POSTROUTING", []) if r.endswith(f"-j {target}")]


def add_foreign_chains(host_ns) -> list[str]:
    """Chains GC must never touch: another network's ipMasq chain for a container GC
    removes here, and a chain whose comment claims this network but whose name is not
    the hash ipMasq derives from it."""
    other, other_comment = ipmasq_chain("othernet", "ctrb")
    forged = "CNI-" + "0" * 24
    for chain, comment in ((other, other_comment), (forged, f'name: "{NETWORK}" id: "ctrc"')):
        host_ns.exec(["iptables", "-t", "nat", "-N", chain])
        host_ns.exec(["iptables", "-t", "nat", "-A", chain, "-d", "10.99.0.0/24", "-m",
                      "comment", "--comment", comment, "-j", "ACCEPT"])
        host_ns.exec(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.99.0.5/32", "-m",
                      "comment", "--comment", comment, "-j", chain])
    return [other, forged]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "ipam"


def test_gc_releases_gone_pods_and_keeps_the_valid_one_working(netns_factory, host_ns, data_dir):
    pods = {cid: netns_factory(cid) for cid in ("ctra", "ctrb", "ctrc")}
    outside = netns_factory("out")
    veth_pair(host_ns, "uplink", outside, "eth0")
    host_ns.exec("ip addr add 198.51.100.1/24 dev uplink")
    outside.exec("ip addr add 198.51.100.2/24 dev eth0")
    conf = bridge_conf(data_dir)
    results = {cid: add(host_ns, conf, pod, cid) for cid, pod in pods.items()}
    assert leases(data_dir) == ["10.88.0.2", "10.88.0.3", "10.88.0.4"]
    ours = {cid: ipmasq_chain(NETWORK, cid)[0] for cid in pods}
    before = nat_chains(host_ns)
    assert all(ours[cid] in before and jumps_to(before, ours[cid]) for cid in pods)
    foreign = add_foreign_chains(host_ns)
    foreign_before = {c: rules for c, rules in nat_chains(host_ns).items() if c in foreign}

    assert gc(host_ns, conf, "ctra") == (0, None)

    assert leases(data_dir) == ["10.88.0.2"]
    after = nat_chains(host_ns)
    assert ours["ctra"] in after and after[ours["ctra"]] == before[ours["ctra"]]
    assert jumps_to(after, ours["ctra"]) == jumps_to(before, ours["ctra"])
    for cid in ("ctrb", "ctrc"):
        assert ours[cid] not in after and not jumps_to(after, ours[cid])
    assert {c: rules for c, rules in after.items() if c in foreign} == foreign_before
    assert all(jumps_to(after, c) for c in foreign)

    # The valid pod keeps its address and its masquerade: real TCP to the node and outside.
    assert results["ctra"]["ips"][0]["address"] == "10.88.0.2/24"
    assert tcp_exchange(host_ns, pods["ctra"], "10.88.0.2") == "10.88.0.1"
    assert tcp_exchange(pods["ctra"], outside, "198.51.100.2") == "198.51.100.1"

    # GC again changes nothing.
    assert gc(host_ns, conf, "ctra") == (0, None)
    assert nat_chains(host_ns) == after and leases(data_dir) == ["10.88.0.2"]
    assert cni(host_ns, "DEL", conf, netns=pods["ctra"].path, cid="ctra") == (0, None)


def test_gc_with_an_empty_valid_list_removes_every_attachment(netns_factory, host_ns, data_dir):
    conf = bridge_conf(data_dir)
    add(host_ns, conf, netns_factory("pa"), "ctra")
    assert gc(host_ns, conf) == (0, None)
    assert leases(data_dir) == []
    assert not any(c.startswith("CNI-") for c in nat_chains(host_ns))


def test_gc_cleans_masq_chains_even_after_ipmasq_was_turned_off(netns_factory, host_ns, data_dir):
    conf = bridge_conf(data_dir)
    add(host_ns, conf, netns_factory("pa"), "ctra")
    assert gc(host_ns, dict(conf, ipMasq=False)) == (0, None)
    assert ipmasq_chain(NETWORK, "ctra")[0] not in nat_chains(host_ns)


@pytest.mark.parametrize("attachments", [None, "ctra", [{"containerID": "ctra"}], [["ctra"]]])
def test_gc_with_malformed_valid_attachments_is_code_7_and_releases_nothing(
        netns_factory, host_ns, data_dir, attachments):
    conf = bridge_conf(data_dir)
    add(host_ns, conf, netns_factory("pa"), "ctra")
    bad = dict(conf)
    if attachments is not None:
        bad["cni.dev/valid-attachments"] = attachments
    rc, err = cni(host_ns, "GC", bad)
    assert rc == 1 and err["code"] == 7 and "valid-attachments" in err["msg"], err
    assert leases(data_dir) == ["10.88.0.2"]
    assert ipmasq_chain(NETWORK, "ctra")[0] in nat_chains(host_ns)


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_gc_and_status_need_cni_1_1(host_ns, data_dir, version):
    for command in ("GC", "STATUS"):
        conf = bridge_conf(data_dir, version=version, **{"cni.dev/valid-attachments": []})
        rc, err = cni(host_ns, command, conf)
        assert rc == 1 and err["code"] == 1 and command in err["msg"], err


def test_status_ready_on_a_fresh_node_and_with_the_bridge_up(netns_factory, host_ns, data_dir):
    conf = bridge_conf(data_dir)
    assert cni(host_ns, "STATUS", conf) == (0, None)
    assert host_ns.exec("ip link show kbr0", check=False).returncode != 0, "STATUS created it"
    add(host_ns, conf, netns_factory("pa"), "ctra")
    assert cni(host_ns, "STATUS", conf) == (0, None)


def test_status_is_50_when_the_bridge_name_is_not_a_bridge(host_ns, data_dir):
    host_ns.exec("ip link add kbr0 type veth peer name kbr0peer")
    rc, err = cni(host_ns, "STATUS", bridge_conf(data_dir))
    assert rc == 1 and err["code"] == 50, err
    assert "'kbr0'" in err["msg"] and "not a bridge" in err["msg"] and "veth" in err["details"]


def test_status_passes_ipam_exhaustion_through(netns_factory, host_ns, data_dir):
    conf = bridge_conf(data_dir, ranges=[[{"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.5",
                                           "rangeEnd": "10.90.0.5"}]])
    assert cni(host_ns, "STATUS", conf) == (0, None)
    add(host_ns, conf, netns_factory("pa"), "ctra")
    rc, err = cni(host_ns, "STATUS", conf)
    assert rc == 1 and err["code"] == 50 and "exhausted" in err["msg"], err
    # What STATUS foretold: the next ADD fails for want of an address.
    rc, err = cni(host_ns, "ADD", conf, netns=netns_factory("pb").path, cid="ctrb")
    assert rc == 1 and err["code"] == 11, err
    assert gc(host_ns, conf) == (0, None)
    assert cni(host_ns, "STATUS", conf) == (0, None)
