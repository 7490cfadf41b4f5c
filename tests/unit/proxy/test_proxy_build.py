"""The proxy's desired kernel state: IPVS services, VIPs, sets and rules (pure)."""
from helpers.proxy_objects import READY, eps, service
from proxyd.kernel import names
from proxyd.proxy.build import NodeView, ProxyFlags, build_proxy
from proxyd.proxy.model import build_model

NODE = NodeView("node-a", {4: "172.30.0.10"}, ("172.30.0.10", "192.168.5.1"),
                ("10.244.0.0/24", "10.244.1.0/24"))
ENDPOINTS = [("10.244.0.2", "node-a", READY), ("10.244.1.2", "node-b", READY)]


def desired(svc, flags=ProxyFlags(), endpoints=ENDPOINTS):
    return build_proxy(build_model([svc], [eps(svc["metadata"]["name"], endpoints)]).ports, NODE,
                       flags)


def test_cluster_ip_service_masquerades_to_every_ready_endpoint_and_holds_the_vip():
    d = desired(service("web", sessionAffinity="ClientIP",
                        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    (vs,) = d.services
    assert (vs.protocol, vs.address, vs.port, vs.scheduler, vs.persistent) == (
        "TCP", "10.96.0.10", 80, "rr", 60)
    assert [(x.address, x.port, x.forward) for x in vs.destinations] == [
        ("10.244.0.2", 8080, "masq"), ("10.244.1.2", 8080, "masq")]
    assert d.vips == ["10.96.0.10"]


def test_node_port_on_the_node_address_or_every_local_address_with_local_policy():
    svc = service("web", type_="NodePort", externalTrafficPolicy="Local")
    frontends = {(vs.address, vs.port): vs for vs in desired(svc).services}
    assert set(frontends) == {("10.96.0.10", 80), ("172.30.0.10", 30080)}
    assert [x.address for x in frontends[("172.30.0.10", 30080)].destinations] == ["10.244.0.2"]
    assert len(frontends[("10.96.0.10", 80)].destinations) == 2        # internal: not Local
    all_ips = desired(svc, ProxyFlags(nodeport_bindon_all_ip=True)).services
    assert {(vs.address, vs.port) for vs in all_ips} >= {("192.168.5.1", 30080)}
    assert "172.30.0.10" not in desired(svc).vips                      # node IPs stay off the dummy


def test_snat_spares_pods_reaching_a_cluster_ip_and_local_policy_frontends_only():
    rules = desired(service("web", type_="NodePort", externalTrafficPolicy="Local")).families[4]
    (snat,) = rules.nat
    assert snat.name == names.SERVICE_SNAT_CHAIN
    assert list(snat.rules) == [
        "-m set --match-set kube-router-service-pods src -m ipvs --vaddr 10.96.0.0/12 "
        '--vdir ORIGINAL --vmethod MASQ -m comment --comment "pod to ClusterIP" -j RETURN',
        "-m ipvs --vaddr 172.30.0.10 --vport 30080 --vdir ORIGINAL --vmethod MASQ "
        '-m comment --comment "local x/web" -j RETURN',
        "-m ipvs --vdir ORIGINAL --vmethod MASQ "
        '-m comment --comment "SNAT for IPVS-forwarded traffic" -j SNAT --to-source 172.30.0.10']
    everything = desired(service("web"), ProxyFlags(masquerade_all=True)).families[4].nat[0]
    assert len(everything.rules) == 1 and everything.rules[0].endswith("--to-source 172.30.0.10")
    assert rules.nat_hooks[0].builtin == "POSTROUTING"


def test_hairpin_snat_for_local_endpoints_only():
    d = desired(service("web", annotations={"kube-router.io/service.hairpin": ""}))
    rules = d.families[4].nat[0].rules
    hairpin = [r for r in rules if "hairpin" in r]
    assert rules[0] == hairpin[0]          # before the RETURN that spares pods' connections
    assert hairpin == ["-s 10.244.0.2/32 -d 10.244.0.2/32 -p tcp -m ipvs --vaddr 10.96.0.10 "
                       '--vport 80 -m comment --comment "hairpin x/web" -j SNAT --to-source 10.96.0.10']


def test_vip_guard_permit_all_or_only_serviced_ports():
    sets = {s.name: s for s in desired(service("web")).sets}
    assert sets["kube-router-svip"].entries == frozenset({"10.96.0.10"})
    assert sets["kube-router-svip-prt"].entries == frozenset({"10.96.0.10,tcp:80"})
    assert desired(service("web")).families[4].filter[0].rules == (
        "-m set --match-set kube-router-svip dst -j ACCEPT",)
    strict = desired(service("web"), ProxyFlags(ipvs_permit_all=False)).families[4].filter[0].rules
    assert strict[0] == "-m set --match-set kube-router-svip-prt dst,dst -j ACCEPT"
    assert strict[-1] == "-m set --match-set kube-router-svip dst -j REJECT --reject-with icmp-port-unreachable"


def test_ipv6_endpoints_never_behind_an_ipv4_vip_and_names_are_ours():
    d = desired(service("web"), endpoints=ENDPOINTS + [("fd00::2", "node-a", READY)])
    assert all(":" not in x.address for vs in d.services for x in vs.destinations)
    assert all(names.is_service_set(s.name) for s in d.sets)
    assert all(names.is_service_chain(c.name) for r in d.families.values() for c in r.nat + r.filter)
