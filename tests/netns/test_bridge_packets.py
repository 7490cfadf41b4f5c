"""The netns tier's spine: a real TCP exchange between two namespaces over a bridge."""
from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange


def test_tcp_between_namespaces_over_a_bridge(netns_factory, host_ns):
    a, b = netns_factory("a"), netns_factory("b")
    host_ns.exec("ip link add br0 type bridge")
    host_ns.exec("ip link set br0 up")
    for ns, addr in ((a, "10.99.0.2/24"), (b, "10.99.0.3/24")):
        veth_pair(host_ns, f"v-{ns.name[-1]}", ns, "eth0")
        host_ns.exec(f"ip link set v-{ns.name[-1]} master br0")
        ns.exec(f"ip addr add {addr} dev eth0")

    assert tcp_exchange(a, b, "10.99.0.3") == "10.99.0.2"
    # The frames crossed the bridge: its forwarding database learned both ends.
    fdb = host_ns.exec("bridge fdb show br br0 dynamic").stdout
    assert fdb.count("master br0") >= 2, fdb
