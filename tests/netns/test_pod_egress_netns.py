"""Pod egress SNAT with real packets: out of the cluster masqueraded, inside it not."""
from helpers.netns import veth_pair
from helpers.traffic import tcp_exchange
from proxyd.routing import egress


def test_pod_to_outside_is_masqueraded_pod_to_pod_cidr_and_node_keep_the_source(netns_factory):
    pod, node, outside = netns_factory("pod"), netns_factory("node"), netns_factory("outside")
    veth_pair(pod, "eth0", node, "podveth")
    veth_pair(node, "uplink", outside, "eth0")
    pod.sh("ip addr add 10.244.0.2/24 dev eth0 && ip route add default via 10.244.0.1")
    node.sh("ip addr add 10.244.0.1/24 dev podveth && ip addr add 192.0.2.1/24 dev uplink")
    node.sysctl("net.ipv4.ip_forward", 1)
    # outside: one address beyond the cluster, one inside another node's pod CIDR, one a node IP
    outside.sh("ip addr add 192.0.2.50/24 dev eth0 && ip addr add 10.244.1.7/32 dev eth0 && "
               "ip addr add 192.0.2.11/32 dev eth0 && ip route add 10.244.0.0/24 via 192.0.2.1")
    node.sh("ip route add 10.244.1.0/24 via 192.0.2.50")

    def program():
        pe = egress.PodEgress((4,))
        pe.sync([("10.244.0.0/24",), ("10.244.1.0/24",)], [{4: "192.0.2.1"}, {4: "192.0.2.11"}])
        return pe

    applier = node.call(program)
    assert tcp_exchange(pod, outside, "192.0.2.50", 8101) == "192.0.2.1"     # masqueraded
    assert tcp_exchange(pod, outside, "10.244.1.7", 8102) == "10.244.0.2"    # another pod CIDR
    assert tcp_exchange(pod, outside, "192.0.2.11", 8103) == "10.244.0.2"    # a node
    assert node.call(lambda: applier.tables[4].apply(*_again(applier))) == 0  # converged
    removed = node.call(lambda: egress.cleanup(applier))
    assert any("KUBE-ROUTER-POD-EGRESS" in r for r in removed)
    assert "kube-router-pod-subnets" not in node.exec("ipset list -n").stdout
    assert tcp_exchange(pod, outside, "192.0.2.50", 8104) == "10.244.0.2"    # SNAT gone


def _again(applier):
    _, chain, hook = egress.build_egress(4, ["10.244.0.0/24", "10.244.1.0/24"],
                                         ["192.0.2.1", "192.0.2.11"])
    return [chain], [hook]
