"""hostPort with real packets: the kube-router-portmap executable inside a private node namespace,
alone and next to the reference plugin.

Topology (every namespace made by the test, removed after it):

    peer (192.168.50.2, fd50::2) --- eth0 [host_ns] kbr0 (10.22.0.1, fd22::1) --- vpod/eth0 [pod]
                                      192.168.50.1, .10                            10.22.0.2, fd22::2
                                      fd50::1, fd50::10

The pod is wired by hand with ``ip`` (no bridge plugin involved) and runs a TCP
and a UDP responder that answer with the source address they saw, so a test
can tell a masqueraded connection from a direct one.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import re
import socket
import sys
import threading

import pytest

from helpers.netns import veth_pair

PLUGIN = str(pathlib.Path(sys.executable).parent / "kube-router-portmap")
NODE4, NODE4_B, PEER4, POD4, GW4 = "192.168.50.1", "192.168.50.10", "192.168.50.2", "10.22.0.2", "10.22.0.1"
NODE6, NODE6_B, PEER6, POD6, GW6 = "fd50::1", "fd50::10", "fd50::2", "fd22::2", "fd22::1"
TIMEOUT = 3


class Responder:
    """TCP and UDP servers in the pod answering "<proto> <source address>"."""

    def __init__(self, ns, family: int, port: int):
        self.socks = []
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        any_addr = "0.0.0.0" if family == 4 else "::"
        tcp, udp = ns.socket(af, socket.SOCK_STREAM), ns.socket(af, socket.SOCK_DGRAM)
        self.socks = [tcp, udp]
        for sock in self.socks:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((any_addr, port))
        tcp.listen(128)
        for fn, sock in ((self._tcp, tcp), (self._udp, udp)):
            threading.Thread(target=fn, args=(sock,), daemon=True).start()

    @staticmethod
    def _tcp(sock):
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"tcp {peer[0]}".encode())

    @staticmethod
    def _udp(sock):
        while True:
            try:
                data, peer = sock.recvfrom(100)
            except OSError:
                return
            if peer is None:   # shut down
                return
            sock.sendto(f"udp {peer[0]}".encode(), peer)

    def close(self):
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def ask(ns, proto: str, addr: str, port: int) -> str:
    """The responder's answer through ``addr:port`` from inside ``ns``; "" when none came."""
    af = socket.AF_INET6 if ":" in addr else socket.AF_INET

    def go():
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(af, kind) as s:
            s.settimeout(TIMEOUT)
            try:
                s.connect((addr, port))
                if proto == "udp":
                    s.send(b"hi")
                return s.recv(100).decode()
            except OSError:
                return ""
    return ns.call(go)


@pytest.fixture
def node(netns_factory, host_ns):
    peer, pod = netns_factory("peer"), netns_factory("pod")
    veth_pair(host_ns, "eth0", peer, "eth0")
    veth_pair(host_ns, "vpod", pod, "eth0")
    host_ns.sh(f"""
        ip link add kbr0 type bridge && ip link set kbr0 up
        ip link set vpod master kbr0
        ip link set vpod type bridge_slave hairpin on
        ip addr add {GW4}/24 dev kbr0 && ip addr add {GW6}/64 dev kbr0 nodad
        ip addr add {NODE4}/24 dev eth0 && ip addr add {NODE4_B}/24 dev eth0
        ip addr add {NODE6}/64 dev eth0 nodad && ip addr add {NODE6_B}/64 dev eth0 nodad
    """)
    peer.sh(f"ip addr add {PEER4}/24 dev eth0 && ip addr add {PEER6}/64 dev eth0 nodad")
    pod.sh(f"""
        ip addr add {POD4}/24 dev eth0 && ip addr add {POD6}/64 dev eth0 nodad
        ip route add default via {GW4} && ip -6 route add default via {GW6}
    """)
    responders = []
    try:
        for family in (4, 6):
            responders.append(Responder(pod, family, 80))
        yield host_ns, peer, pod
    finally:
        for r in responders:
            r.close()


def prev_result(pod, ips=((POD4, GW4, 24), (POD6, GW6, 64))) -> dict:
    return {"cniVersion": "1.0.0",
            "interfaces": [{"name": "kbr0"}, {"name": "vpod"},
                           {"name": "eth0", "sandbox": pod.path}],
            "ips": [{"address": f"{a}/{p}", "gateway": g, "interface": 2} for a, g, p in ips]}


def run_plugin(host_ns, command: str, container_id: str, conf: dict, netns: str = "",
               check: bool = True):
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    proc = host_ns.exec([PLUGIN], input=json.dumps(conf), env=env, check=False)
    if check:
        assert proc.returncode == 0, f"{command} failed: {proc.stdout} {proc.stderr}"
    return proc


def portmap_conf(*mappings, prev=None, **extra) -> dict:
    conf = {"cniVersion": "1.0.0", "name": "podnet", "type": "kube-router-portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": list(mappings)}, **extra}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def save_all(ns) -> str:
    """Every table of both families, without the timestamp comments and the localnet guard
    (it stays once set: tests check it by itself).

    Tables are named one by one: iptables-nft prints a table's built-in chains
    for ``-t TABLE`` even before anything created it, but leaves a table out of
    a plain ``iptables-save`` until it exists.
    """
    text = "".join(ns.exec([tool, "-t", table]).stdout
                   for tool in ("iptables-save", "ip6tables-save")
                   for table in ("filter", "nat", "mangle", "raw"))
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith("#") and GUARD not in line)


GUARD = "KRT-LOCALNET-GUARD"


def guard_in_place(ns) -> bool:
    saved = ns.exec("iptables-save -t raw").stdout
    return f"-A PREROUTING -j {GUARD}\n" in saved and saved.count(f"-A {GUARD} ") == 2


MAPPINGS = ({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"HostPort": 5353, "ContainerPort": 80, "Protocol": "UDP"},
            {"hostPort": 9090, "containerPort": 80, "hostIP": NODE4_B},
            {"hostPort": 9090, "containerPort": 80, "hostIP": NODE6_B})


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


def loopback_listener(ns, port: int):
    """A TCP listener on the node's 127.0.0.1 that answers "secret"; returns its socket."""
    sock = ns.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(8)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"secret")
    threading.Thread(target=serve, daemon=True).start()
    return sock


def pod_reaches(pod, port: int) -> bool:
    def go():
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", port))
                return s.recv(10) == b"secret"
            except OSError:
                return False
    return pod.call(go)


def test_a_pod_routing_127_0_0_1_via_its_gateway_cannot_reach_the_node_loopback(node):
    host_ns, peer, pod = node
    # Two of the node's loopback services: gobgpd's default API port and the health port.
    listeners = [loopback_listener(host_ns, port) for port in (50051, 20244)]
    try:
        conf = portmap_conf(MAPPINGS[0], prev=prev_result(pod))
        run_plugin(host_ns, "ADD", "ctrl", conf, pod.path)
        assert host_ns.exec("sysctl -n net.ipv4.conf.kbr0.route_localnet").stdout.strip() == "1"
        # What a pod with NET_ADMIN in its own namespace can do: drop its own loopback
        # and send 127.0.0.1 to the node, allowing loopback addresses on its eth0.
        pod.sh(f"""ip addr flush dev lo
                   ip route add 127.0.0.1/32 via {GW4} dev eth0
                   sysctl -qw net.ipv4.conf.eth0.route_localnet=1""")
        assert guard_in_place(host_ns)
        assert not pod_reaches(pod, 50051) and not pod_reaches(pod, 20244)
        # The four hostPort paths still answer, 127.0.0.1 on the node among them.
        assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
        assert ask(host_ns, "tcp", NODE4, 8080) == f"tcp {NODE4}"
        assert ask(host_ns, "tcp", "127.0.0.1", 8080) == f"tcp {GW4}"
        assert ask(pod, "tcp", NODE4, 8080) == f"tcp {GW4}"

        # Without the guard the same pod gets through: it is the guard that holds.
        host_ns.exec(f"iptables -t raw -D PREROUTING -j {GUARD}")
        assert pod_reaches(pod, 50051)
        proc = run_plugin(host_ns, "CHECK", "ctrl", conf, pod.path, check=False)
        assert proc.returncode == 1 and GUARD in json.loads(proc.stdout)["details"]
        # A rule ahead of it in raw PREROUTING (an ACCEPT) would bypass it: the next ADD
        # puts the guard first again.
        host_ns.exec(f"iptables -t raw -I PREROUTING 1 -j ACCEPT")
        host_ns.exec(f"iptables -t raw -A PREROUTING -j {GUARD}")
        assert pod_reaches(pod, 50051)
        run_plugin(host_ns, "ADD", "ctrm", portmap_conf(MAPPINGS[1], prev=prev_result(pod)),
                   pod.path)
        saved = host_ns.exec("iptables-save -t raw").stdout
        assert saved.index(f"-A PREROUTING -j {GUARD}") < saved.index("-A PREROUTING -j ACCEPT")
        assert saved.count(f"-A PREROUTING -j {GUARD}") == 1
        assert not pod_reaches(pod, 50051)
        run_plugin(host_ns, "CHECK", "ctrl", conf, pod.path)
        run_plugin(host_ns, "DEL", "ctrm", conf)
        run_plugin(host_ns, "DEL", "ctrl", conf)
        assert guard_in_place(host_ns) and not pod_reaches(pod, 20244)
    finally:
        for sock in listeners:
            sock.close()
