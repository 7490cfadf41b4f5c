"""Services end to end: the simulated cluster with kube-router's IPVS proxy on every node.

``kube-router-sim run services`` inside this kernel (the VM where the host lacks
IPVS): ClusterIP over TCP and UDP from pods and nodes, a NodePort reached from
another node and from a pod, session affinity, a pod reaching itself through
its own Service (hairpin), and an endpoint removed. Who answered each try is
in the JSON report, so the spread across endpoints is asserted, not assumed.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)     # a whole two-node cluster under TCG emulation: ~4 min, more under load
def test_services_through_ipvs_on_every_node(tmp_path):
    report = tmp_path / "services.json"
    proc = subprocess.run([sys.executable, "-m", "proxyd.sim.cli", "run", "services",
                           "--json", str(report)], capture_output=True, text=True, timeout=1100,
                          cwd=REPO, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                         "TMPDIR": str(tmp_path)})
    assert report.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(report.read_text())
    probes = {(p["from"], p["to"], p["port"], p["protocol"]): p
              for p in data["steps"][0]["probes"]}
    wrong = [(k, p["result"], p["answered_by"]) for step in data["steps"] for p in step["probes"]
             for k in [(p["from"], p["to"], p["port"])] if p["result"] != p["expect"]]
    assert wrong == [], proc.stdout[-4000:]

    def answers(src, dst, port, proto="TCP"):
        return probes[(src, dst, port, proto)]["answered_by"]

    # round robin over both endpoints, from a pod, from a node, over UDP
    assert set(answers("shop/client-a", "svc/shop/web", 80)) == {"shop/web-1", "shop/web-2"}
    assert set(answers("node/node-a", "svc/shop/web", 80)) == {"shop/web-1", "shop/web-2"}
    assert set(answers("shop/client-b", "svc/shop/web", 53, "UDP")) == {"shop/web-1", "shop/web-2"}
    # NodePort on node-b, reached from a pod on node-a and from node-a itself
    assert set(answers("shop/client-a", "nodeport/node-b/30080", 30080)) <= {"shop/web-1", "shop/web-2"}
    assert len(answers("node/node-a", "nodeport/node-b/30080", 30080)) == 4
    # ClientIP affinity: one client, one endpoint
    assert len(set(answers("shop/client-b", "svc/shop/sticky", 80))) == 1
    # hairpin: web-1 reaches the Service, and through it sometimes itself
    assert "shop/web-1" in answers("shop/web-1", "svc/shop/web", 80)
    # after web-2 is gone every answer is web-1's
    (after,) = data["steps"][1]["probes"]
    assert set(after["answered_by"]) == {"shop/web-1"}
    assert proc.returncode == 0 and data["ok"]
