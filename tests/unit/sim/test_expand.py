"""Probe expansion: specs + a cluster snapshot -> concrete probes."""
import pytest

from krsim.expand import (ClusterView, NodeView, PodView, ServiceView, expand_probes,
                               pod_matrix)
from krsim.scenario import ScenarioError, parse_scenario

VIEW = ClusterView(
    pods={"x/a": PodView("x/a", "node-a", ("10.244.0.2",), ((80, "TCP"), (53, "UDP")), "/ns/a"),
          "y/b": PodView("y/b", "node-b", ("10.244.1.2",), ((80, "TCP"),), "/ns/b"),
          "y/c": PodView("y/c", "node-b", ("10.244.1.3",), ((8000, "TCP"),), "/ns/c")},
    nodes={"node-a": NodeView("node-a", "172.30.0.10", "/ns/node-a"),
           "node-b": NodeView("node-b", "172.30.0.11", "/ns/node-b")},
    services={"y/web": ServiceView("y/web", "10.96.0.5", ((80, "TCP", None), (53, "UDP", None)))})


def step_of(probes):
    return parse_scenario({"nodes": ["node-a", "node-b"], "steps": [{"probes": probes}]}).steps[0]


def rows(probes):
    return [(p.source, p.source_netns, p.target, p.address, p.port, p.protocol, p.expect)
            for p in probes]


def test_full_matrix_is_every_pod_to_every_declared_port():
    probes = pod_matrix(VIEW, "allow")
    assert len(probes) == 3 * 4          # 3 sources x (2 + 1 + 1) declared ports
    assert ("x/a", "/ns/a", "y/b", "10.244.1.2", 80, "TCP", "allow") in rows(probes)
    assert ("y/c", "/ns/c", "x/a", "10.244.0.2", 53, "UDP", "allow") in rows(probes)
    parsed = parse_scenario({"nodes": ["node-a"], "steps": [{"expect": "deny"}]})
    assert rows(expand_probes(VIEW, parsed.steps[0])) == rows(pod_matrix(VIEW, "deny"))


def test_each_target_form_resolves():
    probes = expand_probes(VIEW, step_of([
        {"from": "x/a", "to": "y/b", "port": 80, "expect": "allow", "count": 2},
        {"from": "node/node-b", "to": "x/a"},                       # every declared port
        {"from": "x/a", "to": "svc/y/web", "protocol": "UDP"},      # the UDP service port
        {"from": "x/a", "to": "nodeport/node-b/30080"},
        {"from": "y/b", "to": "node/node-a", "port": 8080, "expect": "allow"},
        {"from": "node/node-a", "to": "127.0.0.1", "port": 8080}]))
    assert rows(probes) == [
        ("x/a", "/ns/a", "y/b", "10.244.1.2", 80, "TCP", "allow"),
        ("node/node-b", "/ns/node-b", "x/a", "10.244.0.2", 80, "TCP", None),
        ("node/node-b", "/ns/node-b", "x/a", "10.244.0.2", 53, "UDP", None),
        ("x/a", "/ns/a", "svc/y/web", "10.96.0.5", 53, "UDP", None),
        ("x/a", "/ns/a", "nodeport/node-b/30080", "172.30.0.11", 30080, "TCP", None),
        ("y/b", "/ns/b", "node/node-a", "172.30.0.10", 8080, "TCP", "allow"),
        ("node/node-a", "/ns/node-a", "127.0.0.1", "127.0.0.1", 8080, "TCP", None)]
    assert probes[0].count == 2


@pytest.mark.parametrize("probe, message", [
    ({"from": "x/z", "to": "y/b", "port": 80}, "steps[0].probes[0].from: pod x/z does not"),
    ({"from": "x/a", "to": "y/z", "port": 80}, "steps[0].probes[0].to: pod y/z does not"),
    ({"from": "x/a", "to": "svc/y/nope"}, "steps[0].probes[0].to: service y/nope does not"),
])
def test_missing_objects_are_named(probe, message):
    with pytest.raises(ScenarioError) as info:
        expand_probes(VIEW, step_of([probe]))
    assert str(info.value).startswith(message)
