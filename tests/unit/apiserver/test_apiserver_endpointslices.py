"""The EndpointSlice controller follows Services, pod labels, IPs, readiness and deletion."""
from __future__ import annotations

from apiserver_helpers import pod_body, ready_status


def slices(discovery_api, service="web"):
    return discovery_api.list_namespaced_endpoint_slice(
        "default", label_selector=f"kubernetes.io/service-name={service}").items


def endpoints(discovery_api, service="web"):
    return {(e.addresses[0], e.conditions.ready, e.target_ref.name)
            for s in slices(discovery_api, service) for e in s.endpoints or []}


def make_service(core, target_port=8080, **spec):
    return core.create_namespaced_service("default", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": target_port}], **spec}})


def test_slice_follows_readiness_labels_and_deletion(core, discovery_api):
    svc = make_service(core)
    placeholder = slices(discovery_api)
    assert len(placeholder) == 1 and not placeholder[0].endpoints
    core.create_namespaced_pod("default", pod_body("web-1", {"app": "web"}, node="n1"))
    core.patch_namespaced_pod_status("web-1", "default", ready_status("10.244.0.5", ready=False))
    assert endpoints(discovery_api) == {("10.244.0.5", False, "web-1")}
    core.patch_namespaced_pod_status("web-1", "default", ready_status("10.244.0.5"))
    [one] = slices(discovery_api)
    assert one.metadata.name.startswith("web-") and one.address_type == "IPv4"
    assert one.metadata.labels == {
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert one.metadata.owner_references[0].uid == svc.metadata.uid
    [ep] = one.endpoints
    assert (ep.addresses, ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating,
            ep.node_name) == (["10.244.0.5"], True, True, False, "n1")
    assert (ep.target_ref.kind, ep.target_ref.name) == ("Pod", "web-1")
    assert [(p.name, p.port, p.protocol) for p in one.ports] == [("http", 8080, "TCP")]
    # A label change takes the pod out of the selector.
    core.patch_namespaced_pod("web-1", "default", {"metadata": {"labels": {"app": "other"}}})
    assert endpoints(discovery_api) == set()
    core.patch_namespaced_pod("web-1", "default", {"metadata": {"labels": {"app": "web"}}})
    assert endpoints(discovery_api) == {("10.244.0.5", True, "web-1")}
    core.delete_namespaced_pod("web-1", "default")
    assert endpoints(discovery_api) == set()


def test_named_target_port_resolves_per_pod(core, discovery_api):
    make_service(core, target_port="http")
    for name, port in [("a", 8080), ("b", 9090)]:
        core.create_namespaced_pod("default", pod_body(
            name, {"app": "web"}, ports=[{"name": "http", "containerPort": port}]))
        core.patch_namespaced_pod_status(name, "default", ready_status(f"10.244.0.{port % 100}"))
    found = {(tuple(e.target_ref.name for e in s.endpoints), s.ports[0].port)
             for s in slices(discovery_api)}
    assert found == {(("a",), 8080), (("b",), 9090)}


def test_one_slice_per_family(server_factory):
    from apiserver_helpers import make_client
    from kubernetes import client
    server = server_factory(service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"))
    with make_client(server) as api:
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        make_service(core, ipFamilyPolicy="RequireDualStack")
        core.create_namespaced_pod("default", pod_body("a", {"app": "web"}))
        core.patch_namespaced_pod_status("a", "default", ready_status("10.244.0.5", "fd00::5"))
        by_family = {s.address_type: [e.addresses for e in s.endpoints] for s in slices(disc)}
        assert by_family == {"IPv4": [["10.244.0.5"]], "IPv6": [["fd00::5"]]}


def test_service_selector_change_and_delete(core, discovery_api):
    make_service(core)
    core.create_namespaced_pod("default", pod_body("a", {"app": "web"}))
    core.create_namespaced_pod("default", pod_body("b", {"app": "api"}))
    for name, ip in [("a", "10.244.0.1"), ("b", "10.244.0.2")]:
        core.patch_namespaced_pod_status(name, "default", ready_status(ip))
    assert endpoints(discovery_api) == {("10.244.0.1", True, "a")}
    core.patch_namespaced_service("web", "default", {"spec": {"selector": {"app": "api"}}})
    assert endpoints(discovery_api) == {("10.244.0.2", True, "b")}
    core.delete_namespaced_service("web", "default")
    assert slices(discovery_api) == []
    # Unchanged pods do not rewrite slices of unrelated services.
    assert discovery_api.list_endpoint_slice_for_all_namespaces().items == []
