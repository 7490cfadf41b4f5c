"""The firewall the builder wants, written by the kernel appliers into a real namespace.

Every rule must read back from iptables-save exactly as the builder wrote it,
or each sync would rewrite it: the second apply of the same state must write
nothing, in both families, for chains and sets alike.
"""
import ipaddress

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
