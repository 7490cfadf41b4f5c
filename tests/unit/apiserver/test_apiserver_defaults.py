"""Defaulting and the allocations the control plane makes: ClusterIPs, NodePorts, pod CIDRs."""
from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from apiserver_helpers import pod_body


def svc(name, **spec):
    return {"metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def test_service_defaults_and_cluster_ip(core):
    s = core.create_namespaced_service("default", svc("web"))
    assert (s.spec.type, s.spec.session_affinity, s.spec.internal_traffic_policy) == \
        ("ClusterIP", "None", "Cluster")
    assert (s.spec.ports[0].protocol, s.spec.ports[0].target_port) == ("TCP", 80)
    assert (s.spec.ip_families, s.spec.ip_family_policy) == (["IPv4"], "SingleStack")
    assert s.spec.cluster_ip == "10.96.0.2" and s.spec.cluster_ips == ["10.96.0.2"]
    assert s.spec.external_traffic_policy is None and s.spec.ports[0].node_port is None


def test_cluster_ip_taken_and_released(core):
    core.create_namespaced_service("default", svc("a", clusterIP="10.96.0.50"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("default", svc("b", clusterIP="10.96.0.50"))
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["details"]["causes"][0]["field"] == "spec.clusterIPs[0]"
    core.delete_namespaced_service("a", "default")
    assert core.create_namespaced_service("default", svc("b", clusterIP="10.96.0.50")) \
        .spec.cluster_ip == "10.96.0.50"


def test_headless_service(core):
    s = core.create_namespaced_service("default", svc("h", clusterIP="None"))
    assert s.spec.cluster_ip == "None" and s.spec.cluster_ips == ["None"]


def test_node_port_allocation_and_update_keeps_it(core):
    s = core.create_namespaced_service("default", svc("np", type="NodePort"))
    assert s.spec.ports[0].node_port == 30000
    assert s.spec.external_traffic_policy == "Cluster"
    lb = core.create_namespaced_service("default", svc("lb", type="LoadBalancer"))
    assert lb.spec.ports[0].node_port == 30001 and lb.spec.external_traffic_policy == "Cluster"
    # An update that omits clusterIP/nodePort keeps the allocated values.
    body = svc("np", type="NodePort")
    body["metadata"]["labels"] = {"changed": "yes"}
    updated = core.replace_namespaced_service("np", "default", body)
    assert updated.spec.ports[0].node_port == 30000
    assert updated.spec.cluster_ip == s.spec.cluster_ip
    # Back to ClusterIP frees the port for the next NodePort service.
    core.patch_namespaced_service("np", "default", {"spec": {"type": "ClusterIP"}})
    assert core.read_namespaced_service("np", "default").spec.ports[0].node_port is None
    assert core.create_namespaced_service("default", svc("np2", type="NodePort")) \
        .spec.ports[0].node_port == 30000
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("default", svc("np3", type="NodePort",
                                                      ports=[{"port": 80, "nodePort": 30001}]))
    assert caught.value.status == 422


def test_dual_stack_service(server_factory):
    from apiserver_helpers import make_client
    from kubernetes import client
    server = server_factory(service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"))
    with make_client(server) as api:
        core = client.CoreV1Api(api)
        s = core.create_namespaced_service("default", svc("ds", ipFamilyPolicy="PreferDualStack"))
        assert s.spec.ip_families == ["IPv4", "IPv6"]
        assert s.spec.cluster_ips == ["10.96.0.2", "fd00:10:96::2"]


def test_pod_defaults(core):
    p = core.create_namespaced_pod("default", pod_body("p", ports=[{"containerPort": 80}]))
    assert p.spec.containers[0].ports[0].protocol == "TCP"
    assert (p.spec.restart_policy, p.spec.dns_policy, p.status.phase) == \
        ("Always", "ClusterFirst", "Pending")


def test_network_policy_defaults(networking):
    ingress_only = networking.create_namespaced_network_policy("default", {
        "metadata": {"name": "in"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}})
    assert ingress_only.spec.policy_types == ["Ingress"]
    assert ingress_only.spec.ingress[0].ports[0].protocol == "TCP"
    both = networking.create_namespaced_network_policy("default", {
        "metadata": {"name": "both"}, "spec": {"podSelector": {}, "egress": [{}]}})
    assert both.spec.policy_types == ["Ingress", "Egress"]


def test_namespace_defaults(core):
    ns = core.create_namespace({"metadata": {"name": "team-a"}})
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}
    assert ns.status.phase == "Active"


def test_node_pod_cidr_allocation(core):
    a = core.create_node({"metadata": {"name": "a"}})
    # As kube-controller-manager: the CIDR arrives in a follow-up update.
    assert a.spec.pod_cidr is None
    assert core.read_node("a").spec.pod_cidrs == ["10.244.0.0/24"]
    core.create_node({"metadata": {"name": "b"}})
    assert core.read_node("b").spec.pod_cidr == "10.244.1.0/24"
    core.create_node({"metadata": {"name": "fixed"}, "spec": {"podCIDR": "10.244.2.0/24",
                                                              "podCIDRs": ["10.244.2.0/24"]}})
    core.delete_node("a")
    core.create_node({"metadata": {"name": "c"}})
    assert core.read_node("c").spec.pod_cidr == "10.244.0.0/24"
    core.create_node({"metadata": {"name": "d"}})
    assert core.read_node("d").spec.pod_cidr == "10.244.3.0/24"


def test_node_pod_cidrs_dual_stack(server_factory):
    from apiserver_helpers import make_client
    from kubernetes import client
    server = server_factory(cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56"))
    with make_client(server) as api:
        core = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": "a"}})
        core.create_node({"metadata": {"name": "b"}})
        assert core.read_node("b").spec.pod_cidrs == ["10.244.1.0/24", "fd00:10:244:1::/64"]
