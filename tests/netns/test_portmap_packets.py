"""hostPort with real packets: the kube-router-portmap executable inside a private node namespace,
alone and next to the reference plugin (the topology: tests/helpers/hostport.py).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket

import pytest

from helpers.hostport import (GW4, GW6, MAPPINGS, NODE4, NODE4_B, NODE6, NODE6_B, PEER4, PEER6,
                              PLUGIN, POD4, POD6, TIMEOUT, ask, guard_in_place,
                              node, portmap_conf, prev_result, run_plugin,  # noqa: F401
                              save_all)
from helpers.netns import veth_pair


def test_hostport_ipv4_and_ipv6_then_del_restores_iptables(node):
    host_ns, peer, pod = node
    before = save_all(host_ns)
    assert ask(peer, "tcp", NODE4, 8080) == ""    # nothing forwards yet
    conf = portmap_conf(*MAPPINGS, prev=prev_result(pod))

    out = json.loads(run_plugin(host_ns, "ADD", "ctr1", conf, pod.path).stdout)
    assert [ip["address"] for ip in out["ips"]] == [f"{POD4}/24", f"{POD6}/64"]

    # From another machine on the node network: DNAT, source kept.
    assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
    assert ask(peer, "udp", NODE4, 5353) == f"udp {PEER4}"
    assert ask(peer, "tcp", NODE6, 8080) == f"tcp {PEER6}"
    assert ask(peer, "udp", NODE6, 5353) == f"udp {PEER6}"
    # The node itself, through its own address (OUTPUT chain).
    assert ask(host_ns, "tcp", NODE4, 8080) == f"tcp {NODE4}"
    assert ask(host_ns, "tcp", NODE6, 8080) == f"tcp {NODE6}"
    # 127.0.0.1 needs route_localnet on the bridge and masquerade to the bridge address.
    assert ask(host_ns, "tcp", "127.0.0.1", 8080) == f"tcp {GW4}"
    assert ask(host_ns, "udp", "127.0.0.1", 5353) == f"udp {GW4}"
    assert host_ns.exec("sysctl -n net.ipv4.conf.kbr0.route_localnet").stdout.strip() == "1"
    # Hairpin: the pod reaching its own hostPort comes back masqueraded, not from itself.
    assert ask(pod, "tcp", NODE4, 8080) == f"tcp {GW4}"
    assert ask(pod, "udp", NODE4, 5353) == f"udp {GW4}"
    assert ask(pod, "tcp", NODE6, 8080) == f"tcp {GW6}"
    # hostIP: only that destination address forwards the port.
    assert ask(peer, "tcp", NODE4_B, 9090) == f"tcp {PEER4}"
    assert ask(peer, "tcp", NODE4, 9090) == ""
    assert ask(peer, "tcp", NODE6_B, 9090) == f"tcp {PEER6}"
    assert ask(peer, "tcp", NODE6, 9090) == ""

    run_plugin(host_ns, "CHECK", "ctr1", conf, pod.path)
    # The first DEL comes with prevResult and netns, containerd's second with neither.
    run_plugin(host_ns, "DEL", "ctr1", conf, pod.path)
    assert save_all(host_ns) == before
    assert guard_in_place(host_ns)      # route_localnet stays set, and so does its guard
    run_plugin(host_ns, "DEL", "ctr1", portmap_conf(*MAPPINGS))
    assert save_all(host_ns) == before
    assert ask(peer, "tcp", NODE4, 8080) == ""
    assert ask(peer, "tcp", NODE6, 8080) == ""


def test_add_flushes_stale_udp_conntrack_of_its_host_ports(node):
    host_ns, peer, pod = node
    # Another pod's mapping makes the namespace track connections, as on any node.
    other = portmap_conf(MAPPINGS[0], prev=prev_result(pod))
    run_plugin(host_ns, "ADD", "ctrt", other, pod.path)
    # A UDP "flow" to the host port before the mapping exists: conntrack records it
    # un-NATed, and without a flush every later datagram of that flow would follow it.
    client = peer.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.settimeout(TIMEOUT)
        client.bind((PEER4, 40000))
        client.sendto(b"early", (NODE4, 5353))
        assert "dport=5353" in host_ns.exec("conntrack -L -p udp").stdout
        run_plugin(host_ns, "ADD", "ctru", portmap_conf(MAPPINGS[1], prev=prev_result(pod)),
                   pod.path)
        client.sendto(b"late", (NODE4, 5353))
        assert client.recvfrom(100)[0] == f"udp {PEER4}".encode()
    finally:
        client.close()
    run_plugin(host_ns, "DEL", "ctru", portmap_conf(MAPPINGS[1]))
    run_plugin(host_ns, "DEL", "ctrt", other)
    assert "CNI-HOSTPORT" not in host_ns.exec("iptables-save").stdout


def test_a_neighbour_pod_on_the_bridge_reaches_the_host_port(node, netns_factory):
    host_ns, _, pod = node
    neighbour = netns_factory("nbr")
    veth_pair(host_ns, "vnbr", neighbour, "eth0")
    host_ns.exec("ip link set vnbr master kbr0")
    neighbour.sh(f"ip addr add 10.22.0.3/24 dev eth0 && ip route add default via {GW4}")
    conf = portmap_conf(MAPPINGS[0], prev=prev_result(pod))
    run_plugin(host_ns, "ADD", "ctrn", conf, pod.path)
    # Masqueraded to the bridge address: otherwise the pod would answer 10.22.0.3
    # straight over the bridge and the neighbour would drop a reply it never asked for.
    assert ask(neighbour, "tcp", NODE4, 8080) == f"tcp {GW4}"
    run_plugin(host_ns, "DEL", "ctrn", conf)


def test_ipv4_only_pod_passes_check(node):
    host_ns, peer, pod = node
    conf = portmap_conf(MAPPINGS[0], prev=prev_result(pod, ips=((POD4, GW4, 24),)))
    run_plugin(host_ns, "ADD", "ctr4", conf, pod.path)
    assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
    assert ask(peer, "tcp", NODE6, 8080) == ""
    assert "KRT-DN-" not in host_ns.exec("ip6tables-save").stdout
    run_plugin(host_ns, "CHECK", "ctr4", conf, pod.path)
    host_ns.exec("iptables -t nat -F " + re.search(r"KRT-DN-\w+",
                                                    host_ns.exec("iptables-save").stdout)[0])
    proc = run_plugin(host_ns, "CHECK", "ctr4", conf, pod.path, check=False)
    assert proc.returncode == 1 and "do not match" in json.loads(proc.stdout)["msg"]
    run_plugin(host_ns, "DEL", "ctr4", conf, pod.path)
    assert "CNI-HOSTPORT" not in host_ns.exec("iptables-save").stdout


def test_invalid_mapping_is_rejected_with_code_7(node):
    host_ns, _, pod = node
    conf = portmap_conf({"hostPort": 0, "containerPort": 80}, prev=prev_result(pod))
    proc = run_plugin(host_ns, "ADD", "bad", conf, pod.path, check=False)
    err = json.loads(proc.stdout)
    assert proc.returncode == 1 and err["code"] == 7 and "hostPort" in err["msg"]
    assert "CNI-HOSTPORT" not in host_ns.exec("iptables-save").stdout


def test_64_concurrent_adds_then_dels_leave_nothing(node):
    host_ns, peer, pod = node
    before = save_all(host_ns)
    prev = prev_result(pod)
    confs = {f"ctr{i:02d}": portmap_conf({"hostPort": 20000 + i, "containerPort": 80},
                                         {"hostPort": 30000 + i, "containerPort": 80,
                                          "protocol": "udp"}, prev=prev)
             for i in range(64)}
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda kv: run_plugin(host_ns, "ADD", kv[0], kv[1], pod.path),
                      confs.items()))
    saved = host_ns.exec("iptables-save -t nat").stdout
    assert len(set(re.findall(r"KRT-DN-\w+", saved))) == 64
    assert saved.count("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT") == 1
    for i in (0, 31, 63):
        assert ask(peer, "tcp", NODE4, 20000 + i) == f"tcp {PEER4}"
        assert ask(peer, "udp", NODE6, 30000 + i) == f"udp {PEER6}"
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda kv: run_plugin(host_ns, "DEL", kv[0], kv[1]), confs.items()))
    assert save_all(host_ns) == before


REFERENCE = "/usr/lib/cni/portmap"


def run_reference(host_ns, command, container_id, conf, netns=""):
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    proc = host_ns.exec([REFERENCE], input=json.dumps(conf), env=env, check=False)
    assert proc.returncode == 0, f"reference {command}: {proc.stdout} {proc.stderr}"


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                    reason="reference plugin missing: Debian containernetworking-plugins")
def test_ours_and_the_reference_share_a_node(node):
    host_ns, peer, pod = node
    # The reference 1.1.1 has no protocol default: it writes "-p  --dport" and fails.
    ref_conf = portmap_conf({"hostPort": 7070, "containerPort": 80, "protocol": "tcp"},
                            prev=prev_result(pod, ips=(("10.22.0.2", "10.22.0.1", 24),)))
    our_conf = portmap_conf({"hostPort": 8080, "containerPort": 80}, prev=prev_result(pod))
    run_reference(host_ns, "ADD", "refctr", ref_conf, pod.path)
    run_plugin(host_ns, "ADD", "ourctr", our_conf, pod.path)
    assert ask(peer, "tcp", NODE4, 7070) == f"tcp {PEER4}"
    assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
    saved = host_ns.exec("iptables-save -t nat").stdout
    # One set of shared chains and entry jumps for both plugins.
    assert saved.count("-j CNI-HOSTPORT-DNAT") == 2   # PREROUTING and OUTPUT
    assert saved.count("-A POSTROUTING -m comment --comment \"CNI portfwd requiring "
                       "masquerade\" -j CNI-HOSTPORT-MASQ") == 1
    reference_lines = [line for line in saved.splitlines() if "CNI-DN-" in line]
    assert reference_lines

    run_plugin(host_ns, "CHECK", "ourctr", our_conf, pod.path)
    run_plugin(host_ns, "DEL", "ourctr", our_conf, pod.path)
    saved = host_ns.exec("iptables-save -t nat").stdout
    assert [line for line in saved.splitlines() if "CNI-DN-" in line] == reference_lines
    assert not re.search(r"KRT-DN-", saved)
    assert ask(peer, "tcp", NODE4, 7070) == f"tcp {PEER4}"
    assert ask(peer, "tcp", NODE4, 8080) == ""
    run_reference(host_ns, "DEL", "refctr", ref_conf, pod.path)
    assert ask(peer, "tcp", NODE4, 7070) == ""


def test_gc_collects_a_forgotten_attachment(node):
    host_ns, peer, pod = node
    prev = prev_result(pod)
    kept = portmap_conf({"hostPort": 8080, "containerPort": 80}, prev=prev)
    forgotten = portmap_conf({"hostPort": 8081, "containerPort": 80}, prev=prev)
    run_plugin(host_ns, "ADD", "kept", kept, pod.path)
    run_plugin(host_ns, "ADD", "forgotten", forgotten, pod.path)
    assert ask(peer, "tcp", NODE4, 8081) == f"tcp {PEER4}"
    gc = {"cniVersion": "1.1.0", "name": "podnet", "type": "kube-router-portmap",
          "cni.dev/valid-attachments": [{"containerID": "kept", "ifname": "eth0"}]}
    env = {**os.environ, "CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"}
    proc = host_ns.exec([PLUGIN], input=json.dumps(gc), env=env, check=False)
    assert proc.returncode == 0, proc.stdout
    assert ask(peer, "tcp", NODE4, 8081) == ""
    assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
    run_plugin(host_ns, "DEL", "kept", kept)
    assert "CNI-HOSTPORT" not in host_ns.exec("iptables-save").stdout
