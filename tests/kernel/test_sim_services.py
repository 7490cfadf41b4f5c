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
    proc = subprocess.run([sys.executable, "-m", "krsim.cli", "run", "services",
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

    # Probes run concurrently, so one source's tries interleave with another's on the same
    # virtual service: the round robin shows in their union, every try must be answered.
    tcp = [who for src in ("shop/client-a", "node/node-a")
           for who in answers(src, "svc/shop/web", 80)]
    assert set(tcp) == {"shop/web-1", "shop/web-2"} and len(tcp) == 12
    # the UDP service has one client only: its tries alternate
    assert set(answers("shop/client-b", "svc/shop/web", 53, "UDP")) == {"shop/web-1", "shop/web-2"}
    # NodePort on node-b, reached from a pod on node-a and from node-a itself
    for src in ("shop/client-a", "node/node-a"):
        assert set(answers(src, "nodeport/node-b/30080", 30080)) <= {"shop/web-1", "shop/web-2"}
        assert len(answers(src, "nodeport/node-b/30080", 30080)) == 4
    # ClientIP affinity: one client, one endpoint
    assert len(set(answers("shop/client-b", "svc/shop/sticky", 80))) == 1
    # hairpin: web-1 reaches itself through a Service whose only endpoint it is
    assert answers("shop/web-1", "svc/shop/solo", 80) == ["shop/web-1"] * 3
    # after web-2 is gone every answer is web-1's
    (after,) = data["steps"][1]["probes"]
    assert set(after["answered_by"]) == {"shop/web-1"}
    assert proc.returncode == 0 and data["ok"]
