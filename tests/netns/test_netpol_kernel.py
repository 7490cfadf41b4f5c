"""The firewall the builder wants, written by the kernel appliers into a real namespace.

Every rule must read back from iptables-save exactly as the builder wrote it,
or each sync would rewrite it: the second apply of the same state must write
nothing, in both families, for chains and sets alike.
"""
import ipaddress
import os
import sys

from helpers.netpol_objects import namespace, pod, policy
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.netpol.build import NodeRanges, build_firewall
from proxyd.netpol.model import build_node_firewall

RANGES = NodeRanges((ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:96::/108")),
                    (ipaddress.ip_network("203.0.113.0/24"),), (30000, 32767))
PODS = [pod("x", "a", "10.244.0.2", labels={"app": "web"}, ips=["10.244.0.2", "fd00:244::2"],
            ports=[{"name": "http", "containerPort": 8080}]),
        pod("x", "b", "10.244.0.3", labels={"app": "db"}, ips=["10.244.0.3", "fd00:244::3"]),
        pod("y", "c", "10.244.1.2", node="node-b", labels={"app": "web"},
            ports=[{"name": "http", "containerPort": 9090, "protocol": "SCTP"}])]
POLICIES = [
    policy("x", "web", selector={"matchLabels": {"app": "web"}}, ingress=[
        {"from": [{"namespaceSelector": {}},
                  {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
                  {"ipBlock": {"cidr": "fd00:1::/64"}}],
         "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"},
                   {"port": 7000, "endPort": 7100, "protocol": "SCTP"}]},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
         "ports": [{"protocol": "SCTP"}]},
        {}]),
    policy("x", "db", selector={"matchLabels": {"app": "db"}}, types=["Ingress", "Egress"],
           egress=[{"to": [{"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}}],
                    "ports": [{"port": "http", "protocol": "SCTP"}, {"port": 8080}]},
                   {"ports": [{"port": "http"}]}]),
]


def desired():
    model = build_node_firewall("node-a", PODS, [namespace("x"), namespace("y")], POLICIES)
    assert model.problems == []
    return build_firewall(model, (4, 6), RANGES)


def apply(d, ipsets, tables):
    written = ipsets.sync_sets(d.sets)
    for family, ff in d.families.items():
        written += tables[family].apply(ff.chains, ff.hooks)
    ipsets.cleanup_stale(d.set_names())
    return written


def test_second_apply_writes_nothing_and_removal_leaves_nothing(netns_factory):
    node = netns_factory("fwnode")

    def body():
        ipsets = IPSetApplier(names.is_netpol_set)
        tables = {f: TableApplier(f, "filter", names.is_netpol_chain) for f in (4, 6)}
        d = desired()
        assert apply(d, ipsets, tables) > 0
        assert apply(d, ipsets, tables) == 0, {f: t.last_rewritten for f, t in tables.items()}
        # no policies any more: only the three top chains (and their hooks) stay
        empty = build_firewall(build_node_firewall("node-a", PODS, [], []), (4, 6), RANGES)
        assert apply(empty, ipsets, tables) > 0
        assert apply(empty, ipsets, tables) == 0
        return d

    d = node.call(body)
    saved = node.exec("iptables-save -t filter").stdout + node.exec("ip6tables-save -t filter").stdout
    chains = {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}
    assert chains == {"INPUT", "FORWARD", "OUTPUT", names.NETPOL_INPUT, names.NETPOL_FORWARD,
                      names.NETPOL_OUTPUT}
    assert node.exec("ipset list -n").stdout.split() == []
    assert len(d.sets) > 6     # the policies above did make sets, which are gone now


def _routed_pod(netns_factory):
    """client (192.0.2.2) -- node (router) -- pod (10.244.0.2): the node forwards, as a
    node forwards traffic from another node to one of its pods."""
    from helpers.netns import veth_pair
    client, node, pod_ns = netns_factory("client"), netns_factory("node"), netns_factory("pod")
    veth_pair(client, "eth0", node, "uplink")
    veth_pair(pod_ns, "eth0", node, "podveth")
    client.sh("ip addr add 192.0.2.2/24 dev eth0 && ip route add default via 192.0.2.1")
    node.sh("ip addr add 192.0.2.1/24 dev uplink && ip addr add 10.244.0.1/24 dev podveth")
    node.sysctl("net.ipv4.ip_forward", 1)
    pod_ns.sh("ip addr add 10.244.0.2/24 dev eth0 && ip route add default via 10.244.0.1")
    return client, node, pod_ns


def _connects(client, pod_ns, port):
    # a fresh port per check: the server side of a finished exchange sits in TIME_WAIT
    from helpers.traffic import tcp_exchange
    try:
        tcp_exchange(client, pod_ns, "10.244.0.2", port)
        return True
    except ConnectionRefusedError:      # the REJECT's icmp-port-unreachable
        return False


def test_policy_admits_one_port_rejects_another_and_cleanup_config_removes_it(netns_factory):
    client, node, pod_ns = _routed_pod(netns_factory)
    node.sh("iptables -A FORWARD -s 198.51.100.0/24 -j DROP && ipset create other hash:ip")
    before_foreign = node.exec("iptables -S FORWARD").stdout
    pods = [pod("x", "a", "10.244.0.2", labels={"app": "web"})]
    pol = policy("x", "web", ingress=[{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}],
                                       "ports": [{"port": 8080}]}])
    desired = build_firewall(build_node_firewall("node-a", pods, [namespace("x")], [pol]), (4,),
                             RANGES)

    def program():
        apply(desired, IPSetApplier(names.is_netpol_set),
              {4: TableApplier(4, "filter", names.is_netpol_chain)})

    assert _connects(client, pod_ns, 8081)            # no firewall yet
    node.call(program)
    assert _connects(client, pod_ns, 8080)            # the policy's port
    assert not _connects(client, pod_ns, 8082)        # rejected
    kube_router = os.path.join(os.path.dirname(sys.executable), "kube-router")
    result = node.exec([kube_router, "--cleanup-config"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KUBE-NWPLCY-" in result.stderr and "ipset KUBE-SRC-" in result.stderr
    assert _connects(client, pod_ns, 8083)            # nothing of ours filters any more
    saved = node.exec("iptables-save -t filter").stdout
    assert "KUBE-" not in saved
    assert node.exec("iptables -S FORWARD").stdout == before_foreign
    assert node.exec("ipset list -n").stdout.split() == ["other"]
    again = node.exec([kube_router, "--cleanup-config"], check=False)
    assert again.returncode == 0 and "nothing (none found)" in again.stderr
