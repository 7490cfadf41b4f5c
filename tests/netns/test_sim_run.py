"""kube-router-sim run and demo, end to end: API server, kubelet loop, CNI, real packets.

Each test runs the command a user runs, as a subprocess, and checks its exit
code, its JSON report and that nothing it made is left behind.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest

from krsim.netns import leaked_namespaces

SIM = [sys.executable, "-m", "krsim.cli"]

TWO_NODES = """
nodes: [node-a, node-b]
steps:
  - apply:
      - {kind: Namespace, metadata: {name: x}}
      - {kind: Namespace, metadata: {name: y}}
      - kind: Pod
        metadata: {name: a, namespace: x}
        spec:
          nodeName: node-a
          containers: [{name: c, ports: [{containerPort: 80, hostPort: 8080},
                                         {containerPort: 53, protocol: UDP}]}]
      - kind: Pod
        metadata: {name: b, namespace: x}
        spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
      - kind: Pod
        metadata: {name: c, namespace: y}
        spec: {nodeName: node-b, containers: [{name: c, ports: [{containerPort: 80}]}]}
    probes:
      - {from: x/a, to: x/b, port: 80, expect: allow}        # same node
      - {from: x/a, to: y/c, port: 80, expect: allow}        # across nodes
      - {from: y/c, to: x/a, port: 53, protocol: UDP, expect: allow}
      - {from: y/c, to: x/a, port: 81, expect: deny}         # nothing listens there
      - {from: y/c, to: node/node-a, port: 8080, expect: allow}   # hostPort
      - {from: node/node-a, to: 127.0.0.1, port: 8080, expect: allow}
      - {from: x/a, to: node/node-a, port: 8080, expect: allow}   # hairpin
  - delete: [{kind: Pod, namespace: x, name: b}]
    expect: allow
"""


def run_sim(args, tmp_path, timeout=90):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(SIM + args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=pathlib.Path(__file__).resolve().parents[2])


def assert_nothing_left(pid: int, tmp_path, tag: str | None = None):
    assert leaked_namespaces(f"krsim-{pid % 100000}-") == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("krsim-")] == []
    if tag:
        assert processes_tagged(tag) == []


def processes_tagged(tag: str) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"KRSIM_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_two_nodes_scenario_json_report(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TWO_NODES)
    report = tmp_path / "report.json"
    started = time.monotonic()
    proc = subprocess.Popen(SIM + ["run", str(scenario), "--json", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert time.monotonic() - started < 45
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and len(doc["steps"]) == 2
    probes = {(p["from"], p["to"], p["port"], p["protocol"]): p for p in doc["steps"][0]["probes"]}
    assert probes[("x/a", "x/b", 80, "TCP")]["answered_by"] == "x/b"
    assert probes[("x/a", "y/c", 80, "TCP")]["answered_by"] == "y/c"
    assert probes[("y/c", "x/a", 53, "UDP")]["answered_by"] == "x/a"
    assert probes[("y/c", "x/a", 81, "TCP")]["result"] == "deny"
    for src, dst in (("y/c", "node/node-a"), ("node/node-a", "127.0.0.1"),
                     ("x/a", "node/node-a")):
        assert probes[(src, dst, 8080, "TCP")]["answered_by"] == "x/a", (src, dst)
    # After the delete: the full matrix of what is left, and no lease or veth of x/b.
    after = doc["steps"][1]
    assert {(p["from"], p["to"]) for p in after["probes"]} == {
        (s, d) for s in ("x/a", "y/c") for d in ("x/a", "y/c")}
    assert after["leftovers"]["node-a"]["pods"] == 1
    assert len(after["leftovers"]["node-a"]["leases"]) == 1
    assert len(after["leftovers"]["node-a"]["veths"]) == 1
    # Pod CIDRs came from the API server through the Node objects.
    assert "pod CIDR 10.244." in out and "allocated by the API server" in out
    assert_nothing_left(proc.pid, tmp_path)


def test_an_unmet_expectation_fails_the_run(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("""
nodes: [node-a]
steps:
  - apply:
      - {kind: Namespace, metadata: {name: x}}
      - kind: Pod
        metadata: {name: a, namespace: x}
        spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}]}]}
    probes:
      - {from: node/node-a, to: x/a, port: 80, expect: allow}
      - {from: node/node-a, to: x/a, port: 81, expect: allow}
""")
    report = tmp_path / "r.json"
    result = run_sim(["run", str(scenario), "--json", str(report)], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] is False
    assert [(p["port"], p["result"]) for p in doc["steps"][0]["probes"]] == \
        [(80, "allow"), (81, "deny")]
    assert "expected allow, got deny" in result.stdout


def test_sigterm_mid_run_leaves_nothing(tmp_path):
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(SIM + ["run", "two-nodes"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path), "KRSIM_TEST_TAG": tag})
    try:
        lines = []
        for line in proc.stdout:     # stop once pods (namespaces, listeners) exist
            lines.append(line)
            if " on node-" in line and line.strip().startswith("pod "):
                break
        assert [p for p in processes_tagged(tag) if p != proc.pid], \
            "the run should have started listeners by now"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "stopped by SIGTERM" in rest
    assert_nothing_left(proc.pid, tmp_path, tag)


def test_demo_runs_green(tmp_path):
    result = run_sim(["demo"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Demo passed" in out
    assert "127.0.0.1 127.0.0.1:8080/tcp  answered by x/a" in out
    assert "x/a            -> node/node-a 172.30.0.10:8080/tcp  answered by x/a" in out
    assert "pod x/b on node-a: removed (CNI DEL, namespace deleted)" in out
    assert "node-a: pods 1, IP leases 1, pod veths 1" in out
    # pod routes between the nodes come from each node's kube-router over BGP
    assert "node-a: pod routes learned over BGP: 10.244.1.0/24 via 172.30.0.11" in out
    assert "node-b: pod routes learned over BGP: 10.244.0.0/24 via 172.30.0.10" in out


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
def test_service_probe_without_ipvs_says_so(tmp_path):
    result = run_sim(["run", "two-nodes"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the service proxy needs IPVS" in result.stdout and "--vm" in result.stdout
    # Reported, not judged: no proxy exists yet, so nobody answers the ClusterIP.
    assert "svc/shop/web 10.96." in result.stdout and "answered by nobody" in result.stdout
