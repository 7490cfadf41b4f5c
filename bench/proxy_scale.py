"""Benchmark: the IPVS service proxy at scale, from the API write to the kernel.

For each size N (Services of type NodePort, 5 endpoints each) a private network
namespace gets the embedded API server and a real daemon running only the
service proxy, both in-process. Measured there:

* full sync: the daemon's first sync once its caches synced (model, kernel read,
  every VIP, set, IPVS and rule write), against the floor: ``ipvsadm-restore``
  of the same IPVS table (``ipvsadm-save -n`` of it) into a fresh namespace;
* one endpoint change: an EndpointSlice's endpoint replaced in the API server's
  registry (the path a client's write takes once decoded), timed until the
  daemon reports a successful sync covering its resourceVersion; the kernel is
  checked to hold the new destination.

IPVS is needed: where this kernel has none (``/proc/net/ip_vs`` after
``modprobe ip_vs``) the benchmark runs itself inside the project's VM runner
(tests/vm/run), where Python is ~20x slower (TCG), hence the smaller default
sizes there.

    .venv/bin/python bench/proxy_scale.py [--sizes 1000,10000] [--changes 20]
"""
from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from krsim.apiserver import ApiServer, ServerConfig  # noqa: E402
from krsim.apiserver.kinds import ENDPOINTSLICES, NAMESPACES, NODES, SERVICES  # noqa: E402
from krsim.netns import Netns  # noqa: E402
from proxyd import cli  # noqa: E402
from proxyd.daemon import Daemon  # noqa: E402
from bench import harness  # noqa: E402
from proxyd.proxy.controller import ServiceProxyController, ipvs_missing  # noqa: E402

NODE, NODE_IP = "node-a", "172.30.0.10"
ENDPOINTS = 5
NODE_PORTS = (30000, 45000)

covered = functools.partial(harness.covered, "service-proxy", "endpointslices")


def _ip(k: int, base: int = 100) -> str:
    a = k // 250
    return f"10.{base + a // 250}.{a % 250}.{k % 250 + 2}"


def _slice(i: int, addresses: list[str]) -> dict:
    return {"metadata": {"namespace": f"ns{i % 10}", "name": f"s{i}-1",
                         "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "nodeName": NODE, "conditions": {"ready": True}}
                          for a in addresses]}


def load(server: ApiServer, size: int) -> None:
    registry = server.registry
    for n in range(10):
        registry.create(NAMESPACES, "", {"metadata": {"name": f"ns{n}"}})
    registry.create(NODES, "", {"metadata": {"name": NODE}, "spec": {"podCIDR": "10.244.0.0/24"},
                                "status": {"addresses": [{"type": "InternalIP",
                                                          "address": NODE_IP}]}})
    for i in range(size):
        registry.create(SERVICES, f"ns{i % 10}", {
            "metadata": {"namespace": f"ns{i % 10}", "name": f"s{i}"},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80,
                                                   "targetPort": 8080, "protocol": "TCP"}]}})
        registry.create(ENDPOINTSLICES, f"ns{i % 10}",
                        _slice(i, [_ip(i * ENDPOINTS + j) for j in range(ENDPOINTS)]))


def start_daemon(server: ApiServer) -> tuple[Daemon, float]:
    config, _ = cli.parse_args([f"--master={server.url}", f"--hostname-override={NODE}",
                                "--run-firewall=false", "--run-router=false",
                                "--run-service-proxy=true", "--health-port=0",
                                "--metrics-port=0", "--cache-sync-timeout=600s",
                                f"--service-node-port-range={NODE_PORTS[0]}-{NODE_PORTS[1]}"])
    controller = ServiceProxyController(config, NODE, addresses=lambda: [NODE_IP])
    return harness.start_daemon(config, controller)


def changes(server: ApiServer, daemon: Daemon, size: int, rounds: int, ns: Netns) -> list[float]:
    registry, out = server.registry, []
    for r in range(rounds):
        time.sleep(0.6)     # a lone change: no sync of an earlier one still in the interval
        i = (r * 7919) % size
        current = registry.get(ENDPOINTSLICES, f"ns{i % 10}", f"s{i}-1")
        fresh = _ip(r, base=200)
        addresses = [a for e in current["endpoints"] for a in e["addresses"]][1:] + [fresh]
        new = {**_slice(i, addresses), "metadata": current["metadata"]}
        t0 = time.perf_counter()
        done = registry.update(ENDPOINTSLICES, f"ns{i % 10}", f"s{i}-1", new)
        out.append(time.perf_counter() - t0 + covered(daemon, done["metadata"]["resourceVersion"]))
        if r == 0:
            table = ns.exec(["ipvsadm", "-Ln"]).stdout
            if f"{fresh}:8080" not in table:
                raise RuntimeError(f"destination {fresh}:8080 is not in IPVS after its change")
    return out


def floor(saved: str) -> float:
    fresh = Netns("bench-floor")
    try:
        fresh.exec(["ip", "link", "set", "lo", "up"])
        t0 = time.perf_counter()
        fresh.exec(["ipvsadm-restore"], input=saved)
        return time.perf_counter() - t0
    finally:
        fresh.delete()


def measure(size: int, rounds: int) -> dict:
    def run(server, daemon, ns):
        saved = ns.exec(["ipvsadm-save", "-n"]).stdout
        return {"changes": changes(server, daemon, size, rounds, ns), "saved": saved}
    result = harness.in_namespace(
        "bench-proxy", ServerConfig(host="127.0.0.1", port=0, node_ports=NODE_PORTS),
        lambda server: load(server, size), start_daemon, run)
    result["floor"] = floor(result.pop("saved"))
    return result


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] * 1e3


def in_vm(argv: list[str]) -> int:
    """Run this benchmark inside the VM runner (this kernel has no IPVS)."""
    runner = os.path.join(ROOT, "tests", "vm", "run")
    print("this kernel has no IPVS: running in the VM (tests/vm/run)", flush=True)
    return subprocess.call([runner, "--timeout", "3000", "--", sys.executable,
                            os.path.abspath(__file__), *argv])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="N1,N2 (default 1000,10000; 200,2000 "
                                                      "in the VM)")
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    if ipvs_missing() is not None:
        if os.environ.get("KRT_IN_VM") == "1":
            raise SystemExit(f"no IPVS even in the VM: {ipvs_missing()}")
        return in_vm(["--sizes", args.sizes or "200,2000", "--changes", str(args.changes)])
    n1, n2 = (int(n) for n in (args.sizes or "1000,10000").split(","))
    results = {n: measure(n, args.changes) for n in (n1, n2)}
    for n, r in results.items():
        print(f"N={n} services x {ENDPOINTS} endpoints: full sync {r['full']:.2f} s, "
              f"ipvsadm-restore {r['floor']:.2f} s; {len(r['changes'])} endpoint changes "
              f"p50 {_p50(r['changes']):.1f} ms max {max(r['changes']) * 1e3:.1f} ms")
    a, b = _p50(results[n1]["changes"]), _p50(results[n2]["changes"])
    print(f"proxy scale: full {n2}={results[n2]['full'] / results[n2]['floor']:.2f}x "
          f"ipvsadm-restore; one change p50 {a:.1f} ms at {n1}, {b:.1f} ms at {n2} "
          f"(ratio B/A={b / a:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
