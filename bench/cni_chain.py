"""Benchmark: the bridge + host-local + portmap ADD and DEL chains, ours against the reference.

Both chains run the same conflist (only the plugin types differ) in one run on
this machine, each pod in a fresh network namespace, inside a private node
namespace so the machine's own network is untouched. Prints medians, p99 and
the ratio ours/reference (< 1.0 means ours is faster).

    .venv/bin/python bench/cni_chain.py [--pods 40] [--burst 30]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from krsim.cniruntime import Attachment, CniRuntime  # noqa: E402
from krsim.netns import Netns, run  # noqa: E402

REFERENCE_DIR = "/usr/lib/cni"
TYPES = {"ours": ("kube-router-bridge", "kube-router-host-local", "kube-router-portmap"),
         "reference": ("bridge", "host-local", "portmap")}


def conflist(kind: str, data_dir: str, subnet: str) -> dict:
    bridge, ipam, portmap = TYPES[kind]
    return {"cniVersion": "1.0.0", "name": f"bench-{kind}", "plugins": [
        {"type": bridge, "bridge": f"br-{kind[:3]}", "isDefaultGateway": True,
         "hairpinMode": True, "ipam": {"type": ipam, "dataDir": data_dir,
                                       "ranges": [[{"subnet": subnet}]]}},
        {"type": portmap, "capabilities": {"portMappings": True}, "snat": True}]}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def one_pod(rt: CniRuntime, i: int, timings: dict) -> None:
    ns = Netns("bench")
    try:
        att = Attachment(uuid.uuid4().hex, ns.path, "eth0",
                         capability_args={"portMappings": [
                             {"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]})
        t0 = time.perf_counter()
        rt.add(att)
        t1 = time.perf_counter()
        rt.delete(att)
        t2 = time.perf_counter()
        timings["add"].append((t1 - t0) * 1000)
        timings["del"].append((t2 - t1) * 1000)
    finally:
        ns.delete()


def measure(kind: str, bin_dir: str, pods: int, burst: int, subnet: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rt = CniRuntime(conflist(kind, tmp, subnet), [bin_dir])
        seq = {"add": [], "del": []}
        one_pod(rt, 0, {"add": [], "del": []})  # warm the page cache
        for i in range(pods):
            one_pod(rt, i, seq)
        par = {"add": [], "del": []}
        with ThreadPoolExecutor(max_workers=burst) as pool:
            list(pool.map(lambda i: one_pod(rt, 1000 + i, par), range(burst)))
    return {"sequential": seq, "burst": par}


def main() -> int:
    p = argparse.ArgumentParser(description="CNI chain benchmark: ours vs reference")
    p.add_argument("--pods", type=int, default=40)
    p.add_argument("--burst", type=int, default=30)
    p.add_argument("--ours-dir", default=None,
                   help="where our plugins are installed (default: a fresh "
                        "`kube-router-cni install` into a temporary root)")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if not os.path.isdir(REFERENCE_DIR):
        sys.exit(f"reference plugins missing in {REFERENCE_DIR}: "
                 "apt-get install containernetworking-plugins")
    if not a.inside:
        node = Netns("bench-node")
        try:
            node.sysctl("net.ipv4.ip_forward", 1)
            return subprocess.call(node.argv([sys.executable, *sys.argv, "--inside"]))
        finally:
            node.delete()
    ours_dir = a.ours_dir
    tmp_root = None
    if ours_dir is None:
        tmp_root = tempfile.mkdtemp(prefix="krbench-")
        cli = os.path.join(os.path.dirname(sys.executable), "kube-router-cni")
        run([cli, "install", "--root", tmp_root, "--no-config"])
        ours_dir = os.path.join(tmp_root, "opt/cni/bin")
    results = {"reference": measure("reference", REFERENCE_DIR, a.pods, a.burst, "10.201.0.0/16"),
               "ours": measure("ours", ours_dir, a.pods, a.burst, "10.202.0.0/16")}
    print(f"{'':22}{'reference ms':>24}{'ours ms':>24}{'ratio':>10}")
    print(f"{'':22}{'median':>12}{'p99':>12}{'median':>12}{'p99':>12}{'ours/ref':>10}")
    report = {}
    for mode in ("sequential", "burst"):
        for op in ("add", "del"):
            r, o = results["reference"][mode][op], results["ours"][mode][op]
            rm, om = statistics.median(r), statistics.median(o)
            print(f"{mode + ' ' + op.upper():22}{rm:12.1f}{percentile(r, .99):12.1f}"
                  f"{om:12.1f}{percentile(o, .99):12.1f}{om / rm:10.2f}")
            report[f"{mode}_{op}"] = {"reference_median_ms": rm, "ours_median_ms": om,
                                      "ratio": om / rm}
    print(json.dumps(report))
    if tmp_root:
        subprocess.call(["rm", "-rf", tmp_root])
    return 0


if __name__ == "__main__":
    sys.exit(main())
