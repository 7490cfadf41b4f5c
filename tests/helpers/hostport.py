"""A node namespace with a pod on a bridge, for the hostPort tests (the kube-router-portmap
executable inside a private node namespace).

Topology (every namespace made by the fixture, removed after it):

    peer (192.168.50.2, fd50::2) --- eth0 [host_ns] kbr0 (10.22.0.1, fd22::1) --- vpod/eth0 [pod]
                                      192.168.50.1, .10                            10.22.0.2, fd22::2
                                      fd50::1, fd50::10

The pod is wired by hand with ``ip`` (no bridge plugin involved) and runs a TCP
and a UDP responder that answer with the source address they saw, so a test
can tell a masqueraded connection from a direct one. Test modules import the
``node`` fixture from here.
"""
from __future__ import annotations

import json
import os
import pathlib
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


