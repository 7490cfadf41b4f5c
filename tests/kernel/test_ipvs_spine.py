"""The kernel tier's spine: a real TCP request through an IPVS virtual service.

The node is ``host_ns``: a dummy interface carries the virtual IP, IPVS
forwards VIP:80 by masquerade (NAT) to backends that live in their own
namespaces behind veths. IPVS state is per namespace, so removing the
namespaces removes every service and connection entry the tests made.
"""
from __future__ import annotations

import collections
import socket
import threading

import pytest

from helpers.netns import veth_pair
from helpers.traffic import read_line

VIP = "10.96.0.10"
VPORT = 80
BACKEND_PORT = 8080
TIMEOUT = 20  # Python in the TCG guest is ~20x slower than on a host


class Backend:
    """A TCP server in its own namespace that answers every connection with its name."""

    def __init__(self, ns, addr: str, name: str):
        self.name = name.encode()
        self.addr = addr
        self.sock = ns.socket()
        self.sock.bind((addr, BACKEND_PORT))
        self.sock.listen(16)
        self.peers: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                self.peers.append(peer[0])
                conn.sendall(self.name + b"\n")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def node(host_ns):
    """The node: a dummy interface holding the VIP and an rr/masquerade IPVS service on it."""
    host_ns.exec("ip link add kube-dummy-if type dummy")
    host_ns.exec(f"ip addr add {VIP}/32 dev kube-dummy-if")
    host_ns.exec("ip link set kube-dummy-if up")
    host_ns.exec(f"ipvsadm -A -t {VIP}:{VPORT} -s rr")
    return host_ns


@pytest.fixture
def add_backend(node, netns_factory):
    """Make a backend namespace behind a veth and add it to the service as a NAT real server."""
    backends: list[Backend] = []

    def add(index: int) -> Backend:
        ns = netns_factory(f"be{index}")
        veth_pair(node, f"vbe{index}", ns, "eth0")
        node.exec(f"ip addr add 10.200.{index}.1/24 dev vbe{index}")
        ns.exec(f"ip addr add 10.200.{index}.2/24 dev eth0")
        ns.exec(f"ip route add default via 10.200.{index}.1")
        backend = Backend(ns, f"10.200.{index}.2", f"backend-{index}")
        backends.append(backend)
        node.exec(f"ipvsadm -a -t {VIP}:{VPORT} -r {backend.addr}:{BACKEND_PORT} -m")
        return backend

    yield add
    for backend in backends:
        backend.close()


def request_vip(node) -> tuple[str, int]:
    """One TCP request from the node to VIP:80; (the answer, the client's source port)."""
    client = node.socket()
    client.settimeout(TIMEOUT)
    try:
        client.connect((VIP, VPORT))
        port = client.getsockname()[1]
        return read_line(client), port
    finally:
        client.close()


def ipvs_connections(node) -> list[dict]:
    """The IPVS connection table (``ipvsadm -Lnc``): one dict per entry."""
    out = node.exec("ipvsadm -Lnc").stdout
    entries = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] in ("TCP", "UDP"):
            entries.append(dict(zip(("pro", "expire", "state", "source", "virtual",
                                     "destination"), fields)))
    return entries


def test_tcp_request_through_the_vip_reaches_the_backend(node, add_backend):
    backend = add_backend(1)
    service = node.exec("ipvsadm -Ln").stdout
    assert f"TCP  {VIP}:{VPORT} rr" in service, service
    assert f"-> {backend.addr}:{BACKEND_PORT}" in service and "Masq" in service, service

    answer, port = request_vip(node)

    assert answer == "backend-1"
    entries = [e for e in ipvs_connections(node) if e["source"].endswith(f":{port}")]
    assert len(entries) == 1, node.exec("ipvsadm -Lnc").stdout
    assert entries[0]["pro"] == "TCP"
    assert entries[0]["virtual"] == f"{VIP}:{VPORT}"
    assert entries[0]["destination"] == f"{backend.addr}:{BACKEND_PORT}"


def test_round_robin_spreads_requests_over_both_backends(node, add_backend):
    first, second = add_backend(1), add_backend(2)

    answers = [request_vip(node) for _ in range(4)]

    counts = collections.Counter(answer for answer, _ in answers)
    assert counts == {"backend-1": 2, "backend-2": 2}, answers
    # rr alternates strictly: no backend answers twice in a row.
    names = [answer for answer, _ in answers]
    assert all(a != b for a, b in zip(names, names[1:])), names
    by_port = {e["source"].rsplit(":", 1)[1]: e for e in ipvs_connections(node)}
    for answer, port in answers:
        entry = by_port[str(port)]
        expected = first if answer == "backend-1" else second
        assert entry["virtual"] == f"{VIP}:{VPORT}"
        assert entry["destination"] == f"{expected.addr}:{BACKEND_PORT}"
    assert len(first.peers) == 2 and len(second.peers) == 2
