"""Scenario parsing: what is accepted, and errors that name the bad entry."""
import pathlib

import pytest
from click.testing import CliRunner

from krsim.cli import cli
from krsim.scenario import Endpoint, ScenarioError, load_scenario, parse_scenario

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"},
       "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": [
           {"containerPort": 80}]}]}}


def scenario(steps, nodes=("node-a", "node-b")):
    return {"nodes": list(nodes), "steps": steps}


def error_of(data) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    return str(info.value)


def test_a_full_step_parses():
    parsed = parse_scenario(scenario([{
        "title": "t", "apply": [POD], "delete": [{"kind": "Pod", "namespace": "x", "name": "b"}],
        "probes": [{"from": "x/a", "to": "y/b", "port": 80, "protocol": "udp",
                    "expect": "deny", "count": 3},
                   {"from": "node/node-b", "to": "svc/y/web"},
                   {"from": "x/a", "to": "nodeport/node-a/30080", "expect": "allow"},
                   {"from": "x/a", "to": "10.0.0.1", "port": 53}]}]))
    step = parsed.steps[0]
    assert step.apply[0]["metadata"]["name"] == "a"
    assert step.delete[0].namespace == "x" and step.delete[0].name == "b"
    first, svc, nodeport, ip = step.probes
    assert (first.target, first.protocol, first.expect, first.count) == \
        (Endpoint("pod", ("y", "b")), "UDP", "deny", 3)
    assert svc.source == Endpoint("node", ("node-b",)) and svc.port is None
    assert (nodeport.port, nodeport.protocol) == (30080, "TCP")
    assert ip.target == Endpoint("ip", ("10.0.0.1",))
    assert parsed.services_probed


def test_omitted_probes_mean_the_full_matrix():
    parsed = parse_scenario(scenario([{"apply": [POD], "expect": "allow"}, {"probes": []}]))
    assert parsed.steps[0].probes is None and parsed.steps[0].expect == "allow"
    assert parsed.steps[1].probes == ()
    assert not parsed.services_probed


@pytest.mark.parametrize("probe, message", [
    ({"from": "x/a", "to": "x"}, 'steps[1].probes[0].to: "x" is not ns/pod, node/name, '
                                  'svc/ns/name, nodeport/node/port or an IP'),
    ({"from": "svc/x/a", "to": "x/b"}, 'steps[1].probes[0].from: "svc/x/a" is not ns/pod '
                                       'or node/name'),
    ({"from": "x/a", "to": "nodeport/node-z/30000"},
     "steps[1].probes[0].to: node \"node-z\" is not one of the scenario's nodes"),
    ({"from": "x/a", "to": "x/b", "port": 70000}, "steps[1].probes[0].port: 70000 is not"),
    ({"from": "x/a", "to": "10.0.0.1"}, "steps[1].probes[0].port: required"),
    ({"from": "x/a", "to": "x/b", "protocol": "ICMP"}, "steps[1].probes[0].protocol: 'ICMP'"),
    ({"from": "x/a", "to": "x/b", "expect": "yes"}, "steps[1].probes[0].expect: 'yes'"),
    ({"from": "x/a", "to": "x/b", "count": 0}, "steps[1].probes[0].count: 0"),
    ({"from": "x/a", "to": "x/b", "colour": 1}, "steps[1].probes[0].colour: unknown key"),
    ({"to": "x/b"}, "steps[1].probes[0].from: missing"),
    ({"from": "x/a", "to": "nodeport/node-a/30000", "port": 80},
     "steps[1].probes[0].port: 80 differs from the node port"),
])
def test_probe_errors_name_the_entry(probe, message):
    assert error_of(scenario([{"apply": [POD]}, {"probes": [probe]}])).startswith(message)


@pytest.mark.parametrize("data, message", [
    ({"steps": [{}]}, "nodes: a non-empty list"),
    ({"nodes": ["Node_A"], "steps": [{}]}, "nodes[0]: 'Node_A' is not a node name"),
    ({"nodes": ["a", "a"], "steps": [{}]}, "nodes: names repeat"),
    ({"nodes": ["a"]}, "steps: a non-empty list"),
    ({"nodes": ["a"], "steps": [{"aply": []}]}, "steps[0].aply: unknown key"),
    (scenario([{"apply": [{"kind": "Deployment", "metadata": {"name": "d"}}]}]),
     "steps[0].apply[0].kind: 'Deployment' is not one of"),
    (scenario([{"apply": [{"kind": "Pod", "metadata": {}}]}]),
     "steps[0].apply[0].metadata.name: missing"),
    (scenario([{"apply": [{**POD, "spec": {"nodeName": "node-z"}}]}]),
     "steps[0].apply[0].spec.nodeName: 'node-z' is not one of the scenario's nodes"),
    (scenario([{"delete": [{"kind": "Pod", "namespace": "x"}]}]),
     "steps[0].delete[0].name: None is not a valid name"),
    (scenario([{"apply": POD}]), "steps[0].apply: must be a list"),
    ("nodes", "(top): a scenario is a mapping"),
])
def test_structure_errors_name_the_entry(data, message):
    assert error_of(data).startswith(message)


def test_yaml_syntax_error_is_a_scenario_error():
    with pytest.raises(ScenarioError, match=r"^\(yaml\)"):
        load_scenario("nodes: [a\nsteps: {")


def test_built_in_scenarios_parse():
    found = sorted(pathlib.Path(__file__).resolve().parents[3].glob("krsim/scenarios/*.yaml"))
    assert {p.stem for p in found} >= {"demo", "two-nodes", "services"}
    for path in found:
        parsed = load_scenario(path.read_text(), path.stem)
        pods = [m for s in parsed.steps for m in s.apply if m["kind"] == "Pod"]
        assert {m["spec"]["nodeName"] for m in pods} == set(parsed.nodes), path
        # The demo runs on any kernel: it must not depend on IPVS for a verdict.
        if path.stem == "demo":
            assert not [p for s in parsed.steps for p in s.probes or ()
                        if p.target.kind in ("svc", "nodeport") and p.expect], path


def test_cli_rejects_a_bad_scenario_with_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [node-a]\nsteps:\n  - probes: [{from: x/a, to: x}]\n")
    result = CliRunner().invoke(cli, ["run", str(bad)])
    assert result.exit_code == 2
    assert 'steps[0].probes[0].to: "x" is not ns/pod' in result.output


def test_cli_names_the_built_in_scenarios_when_one_is_missing():
    result = CliRunner().invoke(cli, ["run", "no-such-scenario"])
    assert result.exit_code == 1 and "two-nodes" in result.output
