"""The incremental proxy state against the from-scratch builder it must equal.

Random sequences of Service, EndpointSlice and Node changes (seeded, so a
failure replays) are fed one at a time to ``ProxyState.update``; after every
step its desired state must equal ``build_proxy(build_model(...))`` of the
same objects, and the deltas it handed out, applied to a mirror of what the
kernel would hold, must give that same state.
"""
from __future__ import annotations

import ipaddress
import random

import pytest

from helpers.proxy_objects import READY, TERMINATING, eps, service
from proxyd.k8s.tracker import Change
from proxyd.proxy.build import NodeView, ProxyFlags, build_proxy
from proxyd.proxy.model import build_model
from proxyd.proxy.state import ProxyState, ipvs_key

NODES = ("node-a", "node-b", "node-c")
NOT_READY = {"ready": False, "serving": False, "terminating": False}


def node(name, ip, cidrs):
    return {"metadata": {"name": name}, "spec": {"podCIDRs": list(cidrs)},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def random_service(rng, i):
    annotations = {}
    if rng.random() < 0.2:
        annotations["kube-router.io/service.scheduler"] = rng.choice(("sh", "lc", "nope"))
    if rng.random() < 0.2:
        annotations["kube-router.io/service.hairpin"] = ""
    spec = {}
    if rng.random() < 0.3:
        spec["externalIPs"] = [f"198.51.100.{rng.randrange(1, 4)}"]     # shared by some
    if rng.random() < 0.3:
        spec["externalTrafficPolicy"] = "Local"
    if rng.random() < 0.2:
        spec["internalTrafficPolicy"] = "Local"
    ports = [{"name": "http", "port": rng.choice((80, 8080)), "targetPort": 8080}]
    if rng.random() < 0.3:
        ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53})
    cluster_ip = f"10.96.0.{rng.randrange(10, 40)}" if rng.random() < 0.95 else None
    return service(f"s{i}", ports=ports, cluster_ip=cluster_ip, annotations=annotations,
                   type_=rng.choice(("ClusterIP", "NodePort", "LoadBalancer")), **spec)


def random_slice(rng, i, part):
    endpoints = [(f"10.244.{rng.randrange(3)}.{rng.randrange(2, 12)}", rng.choice(NODES),
                  rng.choice((READY, READY, TERMINATING, NOT_READY)))
                 for _ in range(rng.randrange(0, 4))]
    owner = f"s{i}" if rng.random() < 0.9 else f"s{rng.randrange(12)}"
    obj = eps(owner, endpoints, ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                       {"name": "dns", "port": 53, "protocol": "UDP"}])
    obj["metadata"]["name"] = f"s{i}-{part}"
    return obj


def random_node(rng, name):
    octet = NODES.index(name)
    ip = f"172.30.0.{10 + octet + (rng.random() < 0.2) * 50}"
    return node(name, ip, [f"10.244.{octet}.0/24"] if rng.random() < 0.8 else [])


def _key(obj):
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]


def _step(rng, world):
    kind = rng.choice(("services",) * 3 + ("endpointslices",) * 5 + ("nodes",))
    if kind == "nodes":
        name = rng.choice(NODES)
        new = None if rng.random() < 0.1 and name != "node-a" else random_node(rng, name)
        key = name
    else:
        i = rng.randrange(12)
        new = random_service(rng, i) if kind == "services" else random_slice(rng, i, rng.randrange(2))
        key = _key(new)
        if key in world[kind] and rng.random() < 0.25:
            new = None
    if new is None:
        world[kind].pop(key, None)
    else:
        world[kind][key] = new
    return [Change(kind, key, None, new)]


def _table(desired):
    return ({ipvs_key(vs): vs for vs in desired.services}, set(desired.vips),
            {s.name: s for s in desired.sets},
            {f: {c.name: c.rules for c in r.nat} for f, r in desired.families.items()},
            {f: ([c.rules for c in r.filter], r.nat_hooks, r.filter_hooks)
             for f, r in desired.families.items()})


def _expected(world, flags):
    me = world["nodes"]["node-a"]
    view = NodeView("node-a", {4: me["status"]["addresses"][0]["address"]}, ("172.30.0.99",),
                    tuple(c for n in sorted(world["nodes"]) for c in
                          world["nodes"][n]["spec"]["podCIDRs"]))
    model = build_model(world["services"].values(),
                        [world["endpointslices"][k] for k in sorted(world["endpointslices"])])
    return _table(build_proxy(model.ports, view, flags)), model.problems


def _apply(mirror, delta):
    services, vips, sets, nat, _ = mirror
    for key, vs in delta.services.items():
        if vs is None:
            services.pop(key)
        else:
            services[key] = vs
    assert not (delta.vips_added & vips) and delta.vips_removed <= vips
    vips |= delta.vips_added
    vips -= delta.vips_removed
    sets.update(delta.sets)
    for family, chains in delta.chains.items():
        nat[family].update(chains)


@pytest.mark.parametrize("seed", range(12))
def test_every_step_equals_the_from_scratch_build_and_deltas_add_up(seed):
    rng = random.Random(seed)
    flags = ProxyFlags(nodeport_bindon_all_ip=seed % 4 == 1, masquerade_all=seed % 4 == 2,
                       ipvs_permit_all=seed % 2 == 0,
                       service_cidrs=(ipaddress.ip_network("10.96.0.0/12"),))
    world = {"services": {}, "endpointslices": {}, "nodes": {}}
    for name in NODES:
        world["nodes"][name] = random_node(rng, name)
    for i in range(8):
        world["services"][f"x/s{i}"] = random_service(rng, i)
        s = random_slice(rng, i, 0)
        world["endpointslices"][_key(s)] = s
    state = ProxyState("node-a", flags)
    state.load(world["services"].values(), world["endpointslices"].values(),
               world["nodes"].values(), ["172.30.0.99"])
    mirror = _table(state.desired())
    for _ in range(150):
        _apply(mirror, state.update(_step(rng, world)))
        expected, problems = _expected(world, flags)
        assert _table(state.desired()) == expected
        assert mirror == expected
        assert state.problem_list() == problems


def _loaded(services, slices, nodes=(node("node-a", "172.30.0.10", ["10.244.0.0/24"]),)):
    state = ProxyState("node-a", ProxyFlags())
    state.load(services, slices, nodes)
    return state


def test_one_endpoint_change_touches_only_its_service():
    services = [service(f"s{i}", cluster_ip=f"10.96.1.{i}", type_="NodePort", ports=[
        {"name": "http", "port": 80, "nodePort": 30000 + i}]) for i in range(50)]
    slices = [eps(f"s{i}", [(f"10.244.0.{i + 2}", "node-a", READY)]) for i in range(50)]
    state = _loaded(services, slices)
    moved = eps("s7", [("10.244.0.9", "node-a", READY), ("10.244.1.9", "node-b", READY)])

    delta = state.update([Change("endpointslices", "x/s7-abc", slices[7], moved)])

    assert sorted(delta.services) == [("TCP", "10.96.1.7", 80), ("TCP", "172.30.0.10", 30007)]
    assert [d.address for d in delta.services[("TCP", "10.96.1.7", 80)].destinations] == [
        "10.244.0.9", "10.244.1.9"]
    assert not (delta.vips_added or delta.vips_removed or delta.sets or delta.chains)


def test_a_vip_two_services_share_stays_until_the_last_goes():
    a = service("a", cluster_ip="10.96.0.10", externalIPs=["198.51.100.1"])
    b = service("b", cluster_ip="10.96.0.11", externalIPs=["198.51.100.1"])
    state = _loaded([a, b], [])

    gone_a = state.update([Change("services", "x/a", a, None)])
    assert gone_a.vips_removed == {"10.96.0.10"}
    assert ("TCP", "198.51.100.1", 80) not in gone_a.services     # b still holds it

    gone_b = state.update([Change("services", "x/b", b, None)])
    assert gone_b.vips_removed == {"10.96.0.11", "198.51.100.1"}
    assert gone_b.services[("TCP", "198.51.100.1", 80)] is None


def test_another_nodes_pod_cidr_changes_only_the_pod_set():
    state = _loaded([service("a", type_="NodePort")], [])
    delta = state.update([Change("nodes", "node-b", None,
                                 node("node-b", "172.30.0.11", ["10.244.1.0/24"]))])
    assert list(delta.sets) == ["kube-router-service-pods"]
    assert delta.sets["kube-router-service-pods"].entries == {"10.244.0.0/24", "10.244.1.0/24"}
    assert not (delta.services or delta.chains)


def test_a_new_node_address_moves_the_nodeports_and_the_snat_source():
    state = _loaded([service("a", type_="NodePort")], [])
    delta = state.update([Change("nodes", "node-a", None,
                                 node("node-a", "172.30.0.20", ["10.244.0.0/24"]))])
    assert delta.services == {("TCP", "172.30.0.10", 30080): None,
                              ("TCP", "172.30.0.20", 30080): state.service(
                                  ("TCP", "172.30.0.20", 30080))}
    assert delta.chains[4]["KUBE-ROUTER-SERVICES-SNAT"][-1].endswith("--to-source 172.30.0.20")
