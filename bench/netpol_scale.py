"""Benchmark: the firewall controller at scale, from the API write to the kernel.

For each size N (pods in the cluster, 4% of them on this node, 250 policies by
default) a private network namespace gets the embedded API server and a real
daemon running only the firewall controller, both in-process. Measured there:

* full sync: the daemon's first sync once its caches synced (model, kernel read,
  every write), against the floor: ``ipset restore`` + ``iptables-restore --noflush``
  of exactly the sets and chains that sync wrote, into a fresh namespace;
* one pod event: a pod added on this node, a pod relabelled (this node's and
  another's, in turn), a pod deleted -- each written to the API server's
  registry (the path a client's write takes once decoded), timed until the
  daemon reports a successful sync covering its resourceVersion; the kernel is
  checked to hold the change.

    .venv/bin/python bench/netpol_scale.py [--sizes 1000,10000] [--events 20] [--policies 250]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.netpol_sync import cluster  # noqa: E402
from krsim.apiserver import ApiServer, ServerConfig  # noqa: E402
from krsim.apiserver.kinds import NAMESPACES, NETWORKPOLICIES, PODS  # noqa: E402
from krsim.netns import Netns  # noqa: E402
from proxyd import cli  # noqa: E402
from proxyd.daemon import Daemon  # noqa: E402
from bench import harness  # noqa: E402
from proxyd.netpol.controller import NetworkPolicyController  # noqa: E402

NODE = "node-a"

covered = functools.partial(harness.covered, "firewall", "pods")


def load(server: ApiServer, pods, namespaces, policies) -> None:
    registry = server.registry
    for ns in namespaces:
        registry.create(NAMESPACES, "", ns)
    for obj in pods:
        obj["spec"]["containers"][0]["image"] = "pause"
        registry.create(PODS, obj["metadata"]["namespace"], obj)
    for obj in policies:
        registry.create(NETWORKPOLICIES, obj["metadata"]["namespace"], obj)


def start_daemon(server: ApiServer) -> tuple[Daemon, float]:
    config, _ = cli.parse_args([f"--master={server.url}", f"--hostname-override={NODE}",
                                "--run-firewall=true", "--run-router=false",
                                "--run-service-proxy=false", "--health-port=0",
                                "--metrics-port=0", "--cache-sync-timeout=120s"])
    controller = NetworkPolicyController(config, NODE,
                                         ensure_bridge_netfilter=lambda families: None)
    return harness.start_daemon(config, controller)


def _pod(i: int, labels: dict, node: str = NODE) -> dict:
    ip = f"10.250.{i // 250}.{i % 250 + 2}"
    return {"metadata": {"namespace": f"ns{i % 10}", "name": f"new{i}", "labels": labels},
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "image": "pause", "ports": [{"name": "http", "containerPort": 8000}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def events(server: ApiServer, daemon: Daemon, pods, rounds: int, ns: Netns) -> dict[str, list]:
    registry, out = server.registry, {"add": [], "relabel": [], "delete": []}
    for r in range(rounds):
        time.sleep(0.6)     # a lone event: no sync of an earlier one still in the interval
        t0 = time.perf_counter()
        new = registry.create(PODS, f"ns{r % 10}", _pod(r, {"app": f"a{r % 20}", "tier": "t0"}))
        out["add"].append(time.perf_counter() - t0 + covered(daemon, new["metadata"]["resourceVersion"]))
        if r == 0:
            _expect(ns, new["status"]["podIP"], True)
        time.sleep(0.6)
        victim = pods[r * 2 if r % 2 else len(pods) - 1 - r]     # this node's, then another's
        meta = victim["metadata"]
        current = registry.get(PODS, meta["namespace"], meta["name"])
        relabelled = {**current, "metadata": {**current["metadata"], "labels": {
            **current["metadata"]["labels"], "tier": f"moved{r}"}}}
        t0 = time.perf_counter()
        done = registry.update(PODS, meta["namespace"], meta["name"], relabelled)
        out["relabel"].append(time.perf_counter() - t0 + covered(daemon, done["metadata"]["resourceVersion"]))
        time.sleep(0.6)
        t0 = time.perf_counter()
        gone = registry.delete(PODS, f"ns{r % 10}", f"new{r}")
        out["delete"].append(time.perf_counter() - t0 + covered(daemon, gone["metadata"]["resourceVersion"]))
        if r == 0:
            _expect(ns, new["status"]["podIP"], False)
    return out


def _expect(ns: Netns, ip: str, present: bool) -> None:
    """The kernel's sets hold (or no longer hold) the new pod's address."""
    saved = ns.exec(["ipset", "save"]).stdout
    if (f" {ip}\n" in saved) != present:
        raise RuntimeError(f"pod {ip} {'missing from' if present else 'still in'} the sets")


def ours(ns: Netns) -> tuple[str, str]:
    """Our sets and filter-table chains as restore text (everything in these namespaces is ours)."""
    sets = ns.exec(["ipset", "save"]).stdout
    rules = [line for line in ns.exec(["iptables-save", "-t", "filter"]).stdout.splitlines()
             if not line.startswith("#") and not line.startswith((":INPUT", ":FORWARD", ":OUTPUT"))]
    return sets, "\n".join(rules) + "\n"


def floor(sets: str, rules: str) -> float:
    fresh = Netns("bench-floor")
    try:
        t0 = time.perf_counter()
        fresh.exec(["ipset", "restore"], input=sets)
        fresh.exec(["iptables-restore", "--noflush", "-w"], input=rules)
        return time.perf_counter() - t0
    finally:
        fresh.delete()


def measure(size: int, policies: int, rounds: int) -> dict:
    pods, namespaces, pols = cluster(max(1, size * 4 // 100), size, policies)

    def run(server, daemon, ns):
        sets, rules = ours(ns)
        return {"events": events(server, daemon, pods, rounds, ns), "sets": sets,
                "rules": rules}
    result = harness.in_namespace(
        "bench-netpol", ServerConfig(host="127.0.0.1", port=0),
        lambda server: load(server, pods, namespaces, pols), start_daemon, run)
    result["floor"] = floor(result.pop("sets"), result.pop("rules"))
    return result


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--policies", type=int, default=250)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    n1, n2 = (int(n) for n in args.sizes.split(","))
    results = {n: measure(n, args.policies, args.events) for n in (n1, n2)}
    for n, r in results.items():
        every = [t for ts in r["events"].values() for t in ts]
        kinds = ", ".join(f"{k} p50 {_p(ts, .5):.1f} ms p99 {_p(ts, .99):.1f} ms"
                          for k, ts in r["events"].items())
        print(f"N={n} ({args.policies} policies): full sync {r['full']:.2f} s, restore floor "
              f"{r['floor']:.2f} s; {len(every)} pod events: {kinds}")
    big, small = results[n2], results[n1]
    every2 = [t for ts in big["events"].values() for t in ts]
    every1 = [t for ts in small["events"].values() for t in ts]
    a, c = _p(every2, .5), _p(every1, .5)
    print(f"netpol scale: full {n2}={big['full'] / big['floor']:.2f}x restore floor; one pod "
          f"event p50 {a:.1f} ms p99 {_p(every2, .99):.1f} ms at {n2}, p50 at {n1} {c:.1f} ms "
          f"(ratio A/C={a / c:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
