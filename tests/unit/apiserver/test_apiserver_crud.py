"""CRUD through the official client: create/get/list/update/patch/delete and error Statuses."""
from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from apiserver_helpers import pod_body, ready_status


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_default_namespaces_and_kubernetes_service(core):
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    svc = core.read_namespaced_service("kubernetes", "default")
    assert svc.spec.cluster_ip == "10.96.0.1"
    assert svc.spec.ports[0].port == 443


def test_create_get_list_delete_pod(core):
    created = core.create_namespaced_pod("default", pod_body("web-1", {"app": "web"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert int(created.metadata.resource_version) > 0
    got = core.read_namespaced_pod("web-1", "default")
    assert got.metadata.uid == created.metadata.uid
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["web-1"]
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["web-1"]
    deleted = core.delete_namespaced_pod("web-1", "default")
    assert deleted.metadata.name == "web-1"
    assert core.list_namespaced_pod("default").items == []


def test_generate_name(core):
    a = core.create_namespaced_pod("default", {"metadata": {"generateName": "job-"},
                                               "spec": pod_body("x")["spec"]})
    b = core.create_namespaced_pod("default", {"metadata": {"generateName": "job-"},
                                               "spec": pod_body("x")["spec"]})
    assert a.metadata.name.startswith("job-") and len(a.metadata.name) == 9
    assert a.metadata.name != b.metadata.name


def test_already_exists_is_409_status(core):
    core.create_namespaced_pod("default", pod_body("dup"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("default", pod_body("dup"))
    assert caught.value.status == 409
    assert status_of(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "dup" already exists', "reason": "AlreadyExists",
        "details": {"name": "dup", "kind": "pods"}, "code": 409}


def test_not_found_is_404_status(core, networking):
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_pod("nope", "default")
    assert caught.value.status == 404
    assert status_of(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"}, "code": 404}
    with pytest.raises(ApiException) as caught:
        networking.read_namespaced_network_policy("nope", "default")
    assert status_of(caught.value)["message"] == \
        'networkpolicies.networking.k8s.io "nope" not found'


def test_unknown_namespace_is_404(core):
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("ghost", pod_body("p"))
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == 'namespaces "ghost" not found'


def test_missing_name_is_422_naming_the_field(core):
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("default", {"metadata": {}, "spec": pod_body("x")["spec"]})
    body = status_of(caught.value)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"] == [{
        "reason": "FieldValueRequired", "field": "metadata.name",
        "message": "Required value: name or generateName is required"}]


def test_invalid_label_value_is_422(core):
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("default", pod_body("p", {"app": "not valid!"}))
    body = status_of(caught.value)
    assert caught.value.status == 422
    assert body["details"]["causes"][0]["field"] == "metadata.labels"
    assert body["message"].startswith('Pod "p" is invalid: metadata.labels: Invalid value: '
                                      '"not valid!"')


def test_stale_update_conflicts(core):
    first = core.create_namespaced_pod("default", pod_body("p", {"v": "1"}))
    body = core.api_client.sanitize_for_serialization(first)
    body["metadata"]["labels"] = {"v": "2"}
    updated = core.replace_namespaced_pod("p", "default", body)
    assert updated.metadata.labels == {"v": "2"}
    assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)
    body["metadata"]["labels"] = {"v": "3"}          # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_pod("p", "default", body)
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "Conflict"
    assert status_of(caught.value)["message"].startswith(
        'Operation cannot be fulfilled on pods "p": the object has been modified')


def test_noop_update_keeps_resource_version(core):
    first = core.create_namespaced_pod("default", pod_body("p"))
    again = core.replace_namespaced_pod("p", "default",
                                        core.api_client.sanitize_for_serialization(first))
    assert again.metadata.resource_version == first.metadata.resource_version


def test_merge_and_strategic_patch_labels(core):
    core.create_namespaced_pod("default", pod_body("p", {"a": "1", "b": "2"}))
    merged = core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"b": None,
                                                                               "c": "3"}}})
    assert merged.metadata.labels == {"a": "1", "c": "3"}
    for ctype, patch, expect in [
        ("application/merge-patch+json", {"metadata": {"annotations": {"x": "y"}}}, {"x": "y"}),
        ("application/json-patch+json",
         [{"op": "add", "path": "/metadata/annotations/z", "value": "w"}], {"x": "y", "z": "w"}),
    ]:
        core.patch_namespaced_pod("p", "default", patch, _content_type=ctype)
        assert core.read_namespaced_pod("p", "default").metadata.annotations == expect


def test_strategic_patch_merges_conditions_by_type(core):
    core.create_namespaced_pod("default", pod_body("p"))
    core.patch_namespaced_pod_status("p", "default", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}})
    core.patch_namespaced_pod_status("p", "default", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})
    pod = core.read_namespaced_pod_status("p", "default")
    assert {c.type: c.status for c in pod.status.conditions} == {"Ready": "True",
                                                                  "PodScheduled": "True"}


def test_status_subresource_only_changes_status(core):
    core.create_namespaced_pod("default", pod_body("p", {"app": "x"}))
    patched = core.patch_namespaced_pod_status(
        "p", "default", {"metadata": {"labels": {"app": "changed"}}, **ready_status("10.0.0.7")})
    assert patched.status.pod_ip == "10.0.0.7" and patched.status.phase == "Running"
    assert patched.metadata.labels == {"app": "x"}
    # ...and the main resource ignores status.
    body = core.api_client.sanitize_for_serialization(patched)
    body["status"]["phase"] = "Failed"
    body["metadata"]["labels"] = {"app": "y"}
    replaced = core.replace_namespaced_pod("p", "default", body)
    assert replaced.status.phase == "Running" and replaced.metadata.labels == {"app": "y"}


@pytest.mark.parametrize("selector,expected", [
    ("app=web", ["w1", "w2"]),
    ("app==web,tier=fe", ["w1"]),
    ("app!=web", ["d1", "n1"]),
    ("app in (web,db)", ["d1", "w1", "w2"]),
    ("app notin (web,db)", ["n1"]),
    ("tier", ["d1", "w1"]),
    ("!tier", ["n1", "w2"]),
])
def test_label_selectors(core, selector, expected):
    for name, labels in [("w1", {"app": "web", "tier": "fe"}), ("w2", {"app": "web"}),
                         ("d1", {"app": "db", "tier": "be"}), ("n1", {})]:
        core.create_namespaced_pod("default", pod_body(name, labels))
    found = core.list_namespaced_pod("default", label_selector=selector).items
    assert sorted(p.metadata.name for p in found) == expected


def test_field_selectors(core):
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_pod("default", pod_body("a", node="node-1"))
    core.create_namespaced_pod("default", pod_body("b", node="node-2"))
    core.create_namespaced_pod("other", pod_body("a", node="node-1"))
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1").items
    assert sorted((p.metadata.namespace, p.metadata.name) for p in on_node) == \
        [("default", "a"), ("other", "a")]
    named = core.list_pod_for_all_namespaces(
        field_selector="metadata.name=a,metadata.namespace!=default").items
    assert [(p.metadata.namespace, p.metadata.name) for p in named] == [("other", "a")]
    with pytest.raises(ApiException) as caught:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert caught.value.status == 400


def test_namespace_delete_removes_its_objects(core, networking):
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("team", pod_body("p"))
    networking.create_namespaced_network_policy("team", {"metadata": {"name": "deny"},
                                                         "spec": {"podSelector": {}}})
    core.delete_namespace("team")
    assert core.list_pod_for_all_namespaces().items == []
    assert networking.list_network_policy_for_all_namespaces().items == []


def test_cluster_scoped_nodes(core):
    core.create_node({"metadata": {"name": "node-1", "labels": {"role": "worker"}}})
    assert [n.metadata.name for n in core.list_node(label_selector="role=worker").items] == \
        ["node-1"]
    assert core.read_node("node-1").metadata.namespace is None
    core.delete_node("node-1")
    assert core.list_node().items == []


def test_discovery_lists_kinds_and_short_names(api_client):
    resources = client.CoreV1Api(api_client).get_api_resources().resources
    by_name = {r.name: r for r in resources}
    assert by_name["pods"].short_names == ["po"] and by_name["pods"].namespaced
    assert by_name["nodes"].short_names == ["no"] and not by_name["nodes"].namespaced
    assert "pods/status" in by_name
    netpol = client.NetworkingV1Api(api_client).get_api_resources().resources
    assert [(r.name, r.kind, r.short_names) for r in netpol] == \
        [("networkpolicies", "NetworkPolicy", ["netpol"])]
    groups = client.ApisApi(api_client).get_api_versions().groups
    assert sorted(g.name for g in groups) == ["discovery.k8s.io", "networking.k8s.io"]
    assert client.VersionApi(api_client).get_code().major == "1"
