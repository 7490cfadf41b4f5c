"""``kube-router-sim demo``: a two-node cluster built live through the API server, probed,
and torn down.

The demo is the built-in scenario ``scenarios/demo.yaml`` played by the same
harness as ``kube-router-sim run``: manifests go to the API server, the
kubelet runs our CNI plugins for each pod, and every step is probed.
"""
from __future__ import annotations

import pathlib
import sys

from krsim.harness import SettleError, play
from krsim.scenario import load_scenario

DEMO = pathlib.Path(__file__).resolve().parent / "scenarios" / "demo.yaml"


def demo(out=print) -> int:
    scenario = load_scenario(DEMO.read_text(), "demo")
    out("kube-router-sim demo: nodes and pods are network namespaces on this machine;")
    out("manifests go to an in-memory API server, a kubelet loop creates each pod with our")
    out("CNI plugins (bridge + host-local + portmap), and every step is probed live.")
    out("Every node runs kube-router: its firewall enforces NetworkPolicies, and its BGP router")
    out("(gobgpd) learns the other nodes' pod CIDRs; the first sessions take gobgpd 5-10 s.")
    try:
        ok, _, _ = play(scenario, out, color=sys.stdout.isatty())
    except SettleError as exc:
        out(f"== Demo FAILED: {exc}")
        return 1
    out("== Demo " + ("passed: every probe as expected, nothing left behind" if ok
                      else "FAILED"))
    return 0 if ok else 1
