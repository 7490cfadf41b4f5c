"""Benchmark: the firewall controller's sync, diffed against a full write, in one run.

A controller that does not diff (kube-router renders and restores its whole
filter table and every set on each sync) pays the cost of writing the whole
firewall every time. That cost, measured here on an empty node namespace, is
the baseline; against it the run prints what our sync costs when nothing
changed (the periodic resync), when one pod's labels changed, and when one
policy was added. All kernel work happens inside a private namespace.

    .venv/bin/python bench/netpol_sync.py [--local-pods 200] [--pods 1000] [--policies 50]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from proxyd.kernel import names  # noqa: E402
from proxyd.kernel.ipset import IPSetApplier  # noqa: E402
from proxyd.kernel.iptables import TableApplier  # noqa: E402
from proxyd.netpol.build import NodeRanges, build_firewall  # noqa: E402
from proxyd.netpol.model import build_node_firewall  # noqa: E402
from krsim.netns import Netns  # noqa: E402

RANGES = NodeRanges((ipaddress.ip_network("10.96.0.0/12"),), (), (30000, 32767))


def cluster(local: int, total: int, policies: int):
    namespaces = [{"metadata": {"name": f"ns{i}", "labels": {"team": f"t{i % 5}"}}}
                  for i in range(10)]
    pods = []
    for i in range(total):
        ip = ipaddress.ip_address("10.244.0.0") + 2 + i + (i // 250) * 6
        pods.append({"metadata": {"namespace": f"ns{i % 10}", "name": f"p{i}",
                                  "labels": {"app": f"a{i % 20}", "tier": f"t{i % 3}"}},
                     "spec": {"nodeName": "node-a" if i < local else "node-b", "containers": [
                         {"name": "c", "ports": [{"name": "http", "containerPort": 8000 + i % 7}]}]},
                     "status": {"phase": "Running", "podIP": str(ip), "podIPs": [{"ip": str(ip)}]}})
    pols = [{"metadata": {"namespace": f"ns{i % 10}", "name": f"np{i}"},
             "spec": {"podSelector": {"matchLabels": {"app": f"a{i % 20}"}},
                      "policyTypes": ["Ingress", "Egress"],
                      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{i % 5}"}},
                                             "podSelector": {"matchLabels": {"tier": f"t{i % 3}"}}},
                                            {"ipBlock": {"cidr": "192.168.0.0/16",
                                                         "except": ["192.168.1.0/24"]}}],
                                   "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}],
                      "egress": [{"to": [{"podSelector": {}}]}]}}
            for i in range(policies)]
    return pods, namespaces, pols


def sync(pods, namespaces, pols, ipsets, table) -> tuple[float, float, int]:
    """(build seconds, apply seconds, restore lines written)."""
    t0 = time.perf_counter()
    desired = build_firewall(build_node_firewall("node-a", pods, namespaces, pols), (4,), RANGES)
    t1 = time.perf_counter()
    lines = ipsets.sync_sets(desired.sets)
    fam = desired.families[4]
    lines += table.apply(fam.chains, fam.hooks)
    ipsets.cleanup_stale(desired.set_names())
    return t1 - t0, time.perf_counter() - t1, lines


def measure(ns: Netns, pods, namespaces, pols, rounds: int) -> dict[str, list[tuple]]:
    def body():
        out: dict[str, list[tuple]] = {"full write (baseline)": [], "no change": [],
                                       "one pod relabelled": [], "one policy added": []}
        for r in range(rounds):
            ipsets = IPSetApplier(names.is_netpol_set)
            table = TableApplier(4, "filter", names.is_netpol_chain)
            table.apply([], [])                      # start from an empty firewall
            ipsets.cleanup_stale(())
            out["full write (baseline)"].append(sync(pods, namespaces, pols, ipsets, table))
            out["no change"].append(sync(pods, namespaces, pols, ipsets, table))
            moved = [dict(p) for p in pods]
            victim = dict(moved[r]["metadata"])
            victim["labels"] = {**victim["labels"], "tier": "moved"}
            moved[r] = {**moved[r], "metadata": victim}
            out["one pod relabelled"].append(sync(moved, namespaces, pols, ipsets, table))
            extra = dict(pols[0], metadata={"namespace": "ns0", "name": f"extra{r}"})
            out["one policy added"].append(sync(moved, namespaces, pols + [extra], ipsets, table))
        return out
    return ns.call(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-pods", type=int, default=200)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pods, namespaces, pols = cluster(args.local_pods, args.pods, args.policies)
    ns = Netns("bench-netpol")
    try:
        results = measure(ns, pods, namespaces, pols, args.rounds)
    finally:
        ns.delete()
    base = statistics.median(b + a for b, a, _ in results["full write (baseline)"])
    print(f"{args.local_pods} pods on this node, {args.pods} in the cluster, {args.policies} "
          f"policies; median of {args.rounds} rounds")
    print(f"{'sync':24} {'build ms':>9} {'apply ms':>9} {'total ms':>9} {'lines':>7} {'ratio':>6}")
    for label, runs in results.items():
        build = statistics.median(r[0] for r in runs) * 1e3
        apply = statistics.median(r[1] for r in runs) * 1e3
        total = statistics.median(r[0] + r[1] for r in runs)
        lines = statistics.median(r[2] for r in runs)
        print(f"{label:24} {build:9.1f} {apply:9.1f} {total * 1e3:9.1f} {lines:7.0f} "
              f"{total / base:6.2f}")
    print("ratio = this sync / a sync that writes the whole firewall (< 1.0: cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
