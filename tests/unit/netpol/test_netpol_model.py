"""NetworkPolicy semantics: which pods are isolated, which peers and ports each rule allows."""
import ipaddress

import pytest

from helpers.netpol_objects import namespace, pod, policy
from proxyd.netpol.model import build_node_firewall, ip_block, policy_types

N = ipaddress.ip_network
NAMESPACES = [namespace("x", team="blue"), namespace("y", team="red")]
PODS = [pod("x", "a", "10.244.0.2", labels={"app": "web"},
            ports=[{"name": "http", "containerPort": 8080}]),
        pod("x", "b", "10.244.0.3", labels={"app": "db"}),
        pod("y", "c", "10.244.1.2", node="node-b", labels={"app": "web"},
            ports=[{"name": "http", "containerPort": 9090}]),
        pod("y", "h", "172.30.0.11", node="node-b", host_network=True),
        pod("y", "done", "10.244.1.9", node="node-b", phase="Succeeded"),
        pod("x", "pending", None)]


def fw(*policies, node="node-a"):
    return build_node_firewall(node, PODS, NAMESPACES, policies)


def test_pods_without_ip_host_network_or_finished_are_neither_targets_nor_peers():
    model = fw(policy("x", "all", ingress=[{"from": [{"namespaceSelector": {}}]}]))
    assert [p.key for p in model.local_pods] == ["x/a", "x/b"]
    assert model.policies[0].rules["ingress"][0].peers == ("10.244.0.2", "10.244.0.3", "10.244.1.2")


def test_pod_selector_peer_is_the_policys_namespace_only():
    model = fw(policy("x", "p", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]))
    rule = model.policies[0].rules["ingress"][0]
    assert [p.key for p in rule.peer_pods] == ["x/a"] and rule.peers == ("10.244.0.2",)


def test_namespace_and_pod_selector_together_intersect():
    peer = {"namespaceSelector": {"matchLabels": {"team": "red"}},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}
    model = fw(policy("x", "p", ingress=[{"from": [peer]}]))
    assert [p.key for p in model.policies[0].rules["ingress"][0].peer_pods] == ["y/c"]


def test_namespace_selector_by_default_name_label_even_without_namespace_object():
    model = build_node_firewall("node-a", PODS, [], [policy("x", "p", ingress=[{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}])])
    assert [p.key for p in model.policies[0].rules["ingress"][0].peer_pods] == ["y/c"]


def test_targets_are_selected_local_pods_and_isolation_follows_policy_types():
    model = fw(policy("x", "web", selector={"matchLabels": {"app": "web"}}, ingress=[]),
               policy("x", "eg", selector={}, types=["Egress"]))
    web, eg = model.policies[1], model.policies[0]
    assert [p.key for p in web.targets] == ["x/a"] and web.rules == {"ingress": ()}
    assert [p.key for p in eg.targets] == ["x/a", "x/b"] and eg.rules == {"egress": ()}
    a = model.local_pods[0]
    assert model.policies_for(a, "ingress") == [web] and model.policies_for(a, "egress") == [eg]


def test_policy_types_default_like_the_api_server():
    assert policy_types({}) == ["Ingress"]
    assert policy_types({"egress": [{}]}) == ["Ingress", "Egress"]
    assert policy_types({"policyTypes": ["Egress"], "ingress": [{}]}) == ["Egress"]


def test_rule_without_peers_or_ports_allows_everyone():
    model = fw(policy("x", "p", ingress=[{}]))
    rule = model.policies[0].rules["ingress"][0]
    assert rule.peers is None and rule.ports == ()


def test_ip_block_except_and_union():
    assert ip_block({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}) == list(
        N("10.0.0.0/8").address_exclude(N("10.1.0.0/16")))
    # a second block covering the hole wins: peers are a union
    model = fw(policy("x", "p", ingress=[{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        {"ipBlock": {"cidr": "10.1.2.0/24"}}]}]))
    peers = [N(p) for p in model.policies[0].rules["ingress"][0].peers]
    assert any(ipaddress.ip_address("10.1.2.7") in n for n in peers)
    assert not any(ipaddress.ip_address("10.1.3.7") in n for n in peers)
    assert any(ipaddress.ip_address("10.200.0.1") in n for n in peers)


def test_ports_named_numeric_ranges_and_protocol_default():
    model = fw(policy("x", "p", ingress=[{"ports": [
        {"port": "http"}, {"port": 53, "protocol": "UDP"}, {"port": 8000, "endPort": 8100},
        {"protocol": "SCTP"}]}]))
    ports = model.policies[0].rules["ingress"][0].ports
    assert [(p.protocol, p.port, p.end_port) for p in ports] == [
        ("TCP", "http", None), ("UDP", 53, None), ("TCP", 8000, 8100), ("SCTP", None, None)]


def test_egress_named_port_to_anyone_resolves_on_every_pod():
    model = fw(policy("x", "p", types=["Egress"], egress=[{"ports": [{"port": "http"}]}]))
    rule = model.policies[0].rules["egress"][0]
    assert rule.peers is None and {p.key for p in rule.peer_pods} == {"x/a", "x/b", "y/c"}


@pytest.mark.parametrize("bad", [
    {"ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
    {"ingress": [{"ports": [{"port": 70000}]}]},
    {"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
    {"ingress": [{"from": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "Near"}]}}]}]},
    {"policyTypes": ["Sideways"]},
])
def test_a_broken_policy_is_named_and_skipped_and_the_rest_still_apply(bad):
    broken = policy("x", "broken")
    broken["spec"].update(bad)
    model = fw(broken, policy("x", "good", ingress=[]))
    assert [p.name for p in model.policies] == ["good"]
    assert len(model.problems) == 1 and model.problems[0].startswith("NetworkPolicy x/broken: ")


def test_dual_stack_pod_is_a_peer_in_both_families():
    pods = [pod("x", "d", "10.244.0.5", ips=["10.244.0.5", "fd00:10:244::5"])]
    model = build_node_firewall("node-a", pods, NAMESPACES, [
        policy("x", "p", ingress=[{"from": [{"podSelector": {}}]}])])
    assert model.policies[0].rules["ingress"][0].peers == ("10.244.0.5", "fd00:10:244::5")
