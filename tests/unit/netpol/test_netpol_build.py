"""The desired chains and sets for a node, as golden text and as properties."""
import ipaddress
import pathlib

from helpers.netpol_objects import namespace, pod, policy
from proxyd.kernel import names
from proxyd.netpol.build import NodeRanges, build_firewall
from proxyd.netpol.model import build_node_firewall

GOLDEN = pathlib.Path(__file__).with_name("firewall.golden")
RANGES = NodeRanges((ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:96::/108")),
                    (ipaddress.ip_network("203.0.113.0/24"),), (30000, 32767))
NAMESPACES = [namespace("x", team="blue"), namespace("y")]
PODS = [pod("x", "a", "10.244.0.2", labels={"app": "web"}, ips=["10.244.0.2", "fd00:244::2"],
            ports=[{"name": "http", "containerPort": 8080}]),
        pod("x", "b", "10.244.0.3", labels={"app": "db"}),
        pod("x", "free", "10.244.0.4", labels={"app": "other"}),
        pod("y", "c", "10.244.1.2", node="node-b", labels={"app": "web"},
            ports=[{"name": "http", "containerPort": 9090}])]
POLICIES = [
    policy("x", "web", selector={"matchLabels": {"app": "web"}}, ingress=[
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}},
                  {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
         "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "SCTP"}]}]),
    policy("x", "db-egress", selector={"matchLabels": {"app": "db"}}, types=["Egress"], egress=[
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}],
         "ports": [{"port": 8000, "endPort": 8100}, {"port": "http"}]}]),
]


def render(desired) -> str:
    out = []
    for family, ff in desired.families.items():
        out.append(f"# IPv{family}")
        out += [f"hook {h.builtin} {h.rule}" for h in ff.hooks]
        for chain in ff.chains:
            out.append(f":{chain.name}")
            out += [f"-A {chain.name} {rule}" for rule in chain.rules]
    out += [f"set {s.name} {s.kind} {s.family} {' '.join(s.sorted_entries())}".rstrip()
            for s in desired.sets]
    return "\n".join(out) + "\n"


def desired(policies=POLICIES, families=(4, 6)):
    return build_firewall(build_node_firewall("node-a", PODS, NAMESPACES, policies), families, RANGES)


def test_golden_dual_stack():
    # Regenerate after an intended change: python -c "from test_netpol_build import *;
    # GOLDEN.write_text(render(desired()))" from this directory, then review the diff.
    assert render(desired()) == GOLDEN.read_text()


def test_build_is_deterministic_whatever_the_input_order():
    again = build_firewall(build_node_firewall("node-a", PODS[::-1], NAMESPACES[::-1],
                                               POLICIES[::-1]), (6, 4), RANGES)
    assert render(again) == render(desired())


def test_no_policy_means_only_the_top_chains_and_no_pod_is_touched():
    d = desired(policies=[])
    for ff in d.families.values():
        assert [c.name for c in ff.chains] == [names.NETPOL_INPUT, names.NETPOL_FORWARD,
                                               names.NETPOL_OUTPUT]
        assert not any("KUBE-POD" in r for c in ff.chains for r in c.rules)
    assert d.sets == []


def test_unselected_pod_has_no_chain_and_each_isolated_direction_has_one():
    d = desired()
    chains = {c.name for c in d.families[4].chains}
    assert names.pod_chain("x", "free", "ingress") not in chains
    assert names.pod_chain("x", "a", "ingress") in chains
    assert names.pod_chain("x", "a", "egress") not in chains
    assert names.pod_chain("x", "b", "egress") in chains
    assert names.pod_chain("x", "b", "ingress") not in chains


def test_family_split_ipv4_only_pod_has_no_ipv6_jump():
    d = desired()
    v6 = "\n".join(r for c in d.families[6].chains for r in c.rules)
    assert "fd00:244::2/128" in v6 and "10.244" not in v6
    assert names.pod_chain("x", "b", "egress") not in v6     # b has no IPv6 address


def test_named_port_resolves_per_receiving_pod():
    d = desired()
    by_name = {s.name: s for s in d.sets}
    egress = next(c for c in d.families[4].chains
                  if c.name == names.policy_chain("x", "db-egress", "egress"))
    # x/a's http is 8080 and y/c's is 9090: one target set per number
    named = [r for r in egress.rules if "--dport 8080 " in r or "--dport 9090 " in r]
    assert len(named) == 2
    for rule in named:
        ip = "10.244.0.2" if "--dport 8080 " in rule else "10.244.1.2"
        set_name = rule.split("--match-set ")[1].split()[0]
        assert by_name[set_name].entries == frozenset({ip})


def test_zero_cidr_is_split_in_halves_for_ipset():
    d = desired()
    halves = [s for s in d.sets if s.entries == frozenset({"0.0.0.0/1", "128.0.0.0/1"})]
    assert len(halves) == 1 and halves[0].kind == "hash:net"


def test_every_name_fits_the_kernel_limits():
    d = desired()
    assert all(len(c.name) <= names.CHAIN_MAX for ff in d.families.values() for c in ff.chains)
    assert all(len(s.name) <= names.SET_MAX for s in d.sets)
    assert all(names.is_netpol_set(s.name) for s in d.sets)
    assert all(names.is_netpol_chain(c.name) for ff in d.families.values() for c in ff.chains)
