"""API-object facts: each read once, with the API's defaults."""
from lowlevel import apiobjects as ao


def node(addresses=(), spec=None, annotations=None):
    return {"metadata": {"name": "n", "annotations": annotations or {}}, "spec": spec or {},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}}


def test_node_address_per_family_internal_before_external():
    n = node([("Hostname", "n"), ("ExternalIP", "203.0.113.1"), ("InternalIP", "10.0.0.1"),
              ("InternalIP", "10.0.0.2"), ("ExternalIP", "2001:db8::1")])
    assert ao.node_addresses(n) == {4: "10.0.0.1", 6: "2001:db8::1"}
    assert ao.node_addresses({}) == {}


def test_pod_cidrs_precedence_and_source():
    spec = {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"], "podCIDR": "10.244.1.0/24"}
    assert ao.pod_cidrs(node(spec=spec)) == (("10.244.1.0/24", "fd00:1::/64"),
                                             "node object spec.podCIDRs")
    assert ao.pod_cidrs(node(spec={"podCIDR": "10.244.2.0/24"}))[0] == ("10.244.2.0/24",)
    one = {ao.POD_CIDR_ANNOTATION: " 10.50.0.0/24 "}
    assert ao.pod_cidrs(node(spec=spec, annotations=one)) == (
        ("10.50.0.0/24",), "annotation kube-router.io/pod-cidr")
    both = {**one, ao.POD_CIDRS_ANNOTATION: "10.60.0.0/24, fd00:60::/64,"}
    assert ao.pod_cidrs(node(spec=spec, annotations=both))[0] == ("10.60.0.0/24", "fd00:60::/64")
    assert ao.pod_cidrs(node()) == ((), "")


def test_service_addresses():
    svc = {"spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00:96::1"],
                    "externalIPs": ["192.0.2.1"]},
           "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb"}]}}}
    assert ao.cluster_ips(svc) == ("10.96.0.1", "fd00:96::1")
    assert ao.cluster_ips({"spec": {"clusterIP": "None"}}) == ()
    assert ao.cluster_ips({"spec": {"clusterIP": "10.96.0.2"}}) == ("10.96.0.2",)
    assert ao.external_ips(svc) == ("192.0.2.1",)
    assert ao.loadbalancer_ips(svc) == ("198.51.100.1",)


def test_slices_and_endpoint_conditions():
    eps = {"metadata": {"namespace": "x", "labels": {ao.SERVICE_NAME_LABEL: "web"}},
           "endpoints": [{"nodeName": "a", "conditions": {"ready": False, "serving": True,
                                                          "terminating": True}},
                         {"nodeName": "b", "conditions": {}}]}
    assert ao.service_of_slice(eps) == "x/web"
    assert ao.service_of_slice({"metadata": {"namespace": "x"}}) is None
    assert ao.endpoint_conditions(eps["endpoints"][0]) == (False, True, True)
    assert ao.endpoint_conditions({}) == (True, True, False)        # unset: ready, serving
    assert ao.endpoint_conditions({"conditions": {"ready": False}}) == (False, False, False)
    assert ao.has_ready_endpoint_on(eps, "b") and not ao.has_ready_endpoint_on(eps, "a")
