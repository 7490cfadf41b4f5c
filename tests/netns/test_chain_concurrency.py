"""64 pods ADDed at once through the whole chain (bridge + host-local + portmap), then DELed at once.

What a node sees when a deployment scales: every pod gets its own address and
hostPort rules, and after the DELs nothing of ours is left — no lease, veth,
chain or rule.
"""
import json
import pathlib
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

from helpers.netns import Netns
from krsim.cniruntime import Attachment, CniRuntime

BIN = str(pathlib.Path(sys.executable).parent)
PODS = 64


def conflist(data_dir) -> dict:
    return {"cniVersion": "1.0.0", "name": "kubernetes", "plugins": [
        {"type": "kube-router-bridge", "bridge": "kube-bridge", "isDefaultGateway": True,
         "hairpinMode": True,
         "ipam": {"type": "kube-router-host-local", "dataDir": str(data_dir),
                  "ranges": [[{"subnet": "10.244.5.0/24"}]]}},
        {"type": "kube-router-portmap", "capabilities": {"portMappings": True}, "snat": True}]}


def nat_rules(host_ns) -> str:
    return "\n".join(l for l in host_ns.exec(["iptables-save", "-t", "nat"]).stdout.splitlines()
                     if not l.startswith("#"))


def test_64_concurrent_adds_then_dels_leave_nothing(host_ns, tmp_path):
    host_ns.exec(["iptables", "-t", "nat", "-L"])  # the nat table exists before the snapshot
    before = nat_rules(host_ns)
    runtime = CniRuntime(conflist(tmp_path), [BIN], node_netns=host_ns.name, timeout=120)
    pods = [Netns(f"p{i}") for i in range(PODS)]
    atts = [Attachment(uuid.uuid4().hex, ns.path, "eth0", capability_args={"portMappings": [
        {"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}]})
        for i, ns in enumerate(pods)]
    try:
        with ThreadPoolExecutor(max_workers=PODS) as pool:
            results = list(pool.map(runtime.add, atts))
        ips = [r["ips"][0]["address"] for r in results]
        assert len(set(ips)) == PODS, ips
        assert all(ip.startswith("10.244.5.") and ip.endswith("/24") for ip in ips)
        leases = sorted(p.name for p in (tmp_path / "kubernetes").iterdir()
                        if p.name.startswith("10."))
        assert len(leases) == PODS
        nat = nat_rules(host_ns)
        assert sum(f"--dport {30000 + i} " in nat for i in range(PODS)) == PODS
        links = json.loads(host_ns.exec("ip -j link show master kube-bridge").stdout)
        assert len(links) == PODS

        with ThreadPoolExecutor(max_workers=PODS) as pool:
            list(pool.map(runtime.delete, atts))
        left = [p.name for p in (tmp_path / "kubernetes").iterdir() if p.name.startswith("10.")]
        assert left == []
        assert json.loads(host_ns.exec("ip -j link show type veth").stdout or "[]") == []
        assert nat_rules(host_ns) == before
    finally:
        for ns in pods:
            ns.delete()
