"""ipip tunnels, which the BGP overlay uses between nodes in different subnets.

Two namespaces joined by a veth (the underlay) each get an ipip interface
pointing at the other; a TCP exchange between the tunnel addresses must cross
the tunnels, which the tunnels' own packet counters prove.
"""
from __future__ import annotations

import json

from helpers.netns import veth_pair

TIMEOUT = 20


def _tx_rx_packets(ns, dev: str) -> tuple[int, int]:
    stats = json.loads(ns.exec(f"ip -j -s link show dev {dev}").stdout)[0]["stats64"]
    return stats["tx"]["packets"], stats["rx"]["packets"]


def test_tcp_crosses_an_ipip_tunnel_between_namespaces(netns_factory):
    a, b = netns_factory("tun-a"), netns_factory("tun-b")
    veth_pair(a, "eth0", b, "eth0")
    for ns, me, peer, inner, inner_peer in ((a, "10.201.0.1", "10.201.0.2", "172.30.0.1",
                                             "172.30.0.2"),
                                            (b, "10.201.0.2", "10.201.0.1", "172.30.0.2",
                                             "172.30.0.1")):
        ns.exec(f"ip addr add {me}/24 dev eth0")
        ns.exec(f"ip link add kube-tunnel-if type ipip local {me} remote {peer}")
        ns.exec(f"ip addr add {inner}/32 peer {inner_peer}/32 dev kube-tunnel-if")
        ns.exec("ip link set kube-tunnel-if up")
    assert "ipip" in a.exec("ip -d link show kube-tunnel-if").stdout

    server = b.socket()
    server.bind(("172.30.0.2", 9000))
    server.listen()
    server.settimeout(TIMEOUT)
    client = a.socket()
    client.settimeout(TIMEOUT)
    try:
        client.connect(("172.30.0.2", 9000))
        conn, peer = server.accept()
        with conn:
            client.sendall(b"over the tunnel")
            assert conn.recv(64) == b"over the tunnel"
        assert peer[0] == "172.30.0.1"
    finally:
        client.close()
        server.close()

    tx_a, rx_a = _tx_rx_packets(a, "kube-tunnel-if")
    tx_b, rx_b = _tx_rx_packets(b, "kube-tunnel-if")
    # SYN, ACK and data at least, each way through the tunnel devices.
    assert tx_a >= 3 and rx_b >= 3, (tx_a, rx_b)
    assert rx_a >= 2 and tx_b >= 2, (rx_a, tx_b)
