"""Services + EndpointSlices -> ServicePorts: frontends, endpoints, policies (pure)."""
from helpers.proxy_objects import READY, TERMINATING, eps, service
from proxyd.proxy.model import build_model


def test_cluster_ip_port_with_ready_endpoints_matched_by_port_name():
    model = build_model([service("web")], [eps("web", [("10.244.0.2", "node-a", READY),
                                                       ("10.244.1.2", "node-b", READY)])])
    (sp,) = model.ports
    assert (sp.service, sp.protocol, sp.port, sp.cluster_ips) == ("x/web", "TCP", 80, ("10.96.0.10",))
    assert [(e.address, e.port) for e in sp.usable("node-a", False)] == [("10.244.0.2", 8080),
                                                                          ("10.244.1.2", 8080)]


def test_terminating_endpoints_only_when_nothing_is_ready():
    (sp,) = build_model([service("web")], [eps("web", [("10.244.0.2", "node-a", TERMINATING)])]).ports
    assert [e.address for e in sp.usable("node-a", False)] == ["10.244.0.2"]
    (sp,) = build_model([service("web")], [eps("web", [("10.244.0.2", "node-a", TERMINATING),
                                                       ("10.244.0.3", "node-a", READY)])]).ports
    assert [e.address for e in sp.usable("node-a", False)] == ["10.244.0.3"]


def test_traffic_policies_local_keep_this_nodes_endpoints():
    svc = service("web", type_="NodePort", externalTrafficPolicy="Local", internalTrafficPolicy="Local")
    (sp,) = build_model([svc], [eps("web", [("10.244.0.2", "node-a", READY),
                                            ("10.244.1.2", "node-b", READY)])]).ports
    assert sp.node_port == 30080
    assert [e.address for e in sp.usable("node-b", True)] == ["10.244.1.2"]
    assert [e.address for e in sp.usable("node-b", False)] == ["10.244.1.2"]


def test_affinity_scheduler_hairpin_external_and_lb_ips():
    svc = service("web", sessionAffinity="ClientIP", externalIPs=["192.0.2.10"],
                  annotations={"kube-router.io/service.scheduler": "lc",
                               "kube-router.io/service.hairpin": ""})
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example"}]}}
    (sp,) = build_model([svc], []).ports
    assert (sp.scheduler, sp.affinity_seconds, sp.hairpin) == ("lc", 10800, True)
    assert sp.external_ips == ("192.0.2.10", "198.51.100.7")
    assert sp.usable("node-a", False) == ()


def test_headless_external_name_are_not_proxied_and_a_bad_service_is_named_and_skipped():
    model = build_model([service("headless", cluster_ip="None"),
                         service("ext", type_="ExternalName", cluster_ip=None),
                         service("bad", annotations={"kube-router.io/service.scheduler": "fastest"}),
                         service("good", cluster_ip="10.96.0.11")], [])
    assert [sp.service for sp in model.ports] == ["x/good"]
    assert len(model.problems) == 1 and model.problems[0].startswith("Service x/bad: ")


def test_udp_and_unnamed_ports():
    svc = service("dns", ports=({"port": 53, "protocol": "UDP", "targetPort": 5353},))
    slices = [eps("dns", [("10.244.0.9", "node-a", {})], ports=({"port": 5353, "protocol": "UDP"},))]
    (sp,) = build_model([svc], slices).ports
    assert (sp.protocol, sp.name) == ("UDP", "")
    assert [(e.address, e.port, e.ready) for e in sp.endpoints] == [("10.244.0.9", 5353, True)]
