"""``kube-router-sim demo``: a two-node cluster built live, probed, and torn down."""
from __future__ import annotations

import sys

from proxyd.sim.cluster import Cluster
from proxyd.sim.probe import Probe, run_probes
from proxyd.sim.report import render_matrix

PODS = [  # (namespace, name, node, container ports, hostPorts)
    ("x", "a", "node-a", [(80, "TCP"), (53, "UDP")], [{"hostPort": 8080, "containerPort": 80,
                                                      "protocol": "tcp"}]),
    ("x", "b", "node-a", [(80, "TCP"), (53, "UDP")], []),
    ("y", "c", "node-b", [(80, "TCP"), (53, "UDP")], []),
]


def _pod_matrix(cluster: Cluster) -> list[Probe]:
    probes = []
    for src in cluster.pods.values():
        for dst in cluster.pods.values():
            for port, proto in dst.ports:
                probes.append(Probe(src.key, src.netns.path, dst.key, dst.ips[0], port, proto,
                                    expect="allow"))
    for node in cluster.nodes.values():
        for dst in cluster.pods.values():
            probes.append(Probe(f"node/{node.name}", node.netns.path, dst.key, dst.ips[0], 80,
                                expect="allow"))
    return probes


def _host_port_probes(cluster: Cluster) -> list[Probe]:
    a, b = cluster.nodes["node-a"], cluster.nodes["node-b"]
    owner = cluster.pods["x/a"]
    return [
        Probe("node/node-b", b.netns.path, "hostPort node-a", a.address, 8080, expect="allow"),
        Probe("node/node-a", a.netns.path, "hostPort node-a", a.address, 8080, expect="allow"),
        Probe("node/node-a", a.netns.path, "hostPort 127.0.0.1", "127.0.0.1", 8080,
              expect="allow"),
        Probe("x/a (itself)", owner.netns.path, "hostPort node-a", a.address, 8080,
              expect="allow"),
        Probe("y/c", cluster.pods["y/c"].netns.path, "hostPort node-a", a.address, 8080,
              expect="allow"),
    ]


def demo(out=print) -> int:
    color = sys.stdout.isatty()
    out("== Building a two-node cluster in network namespaces")
    with Cluster(["node-a", "node-b"], log=lambda m: out("   " + m)) as cluster:
        out("   (pod routes between the nodes are static until BGP routing runs)")
        out("== Creating pods with the CNI plugins (bridge + host-local + portmap)")
        for ns, name, node, ports, host_ports in PODS:
            cluster.add_pod(ns, name, node, ports, host_ports)
        out("== Pod-to-pod and node-to-pod connectivity (every declared port)")
        probes = run_probes(_pod_matrix(cluster))
        out(render_matrix(probes, color))
        out("== hostPort 8080 -> x/a:80 (from another node, the node itself, 127.0.0.1, "
            "the pod itself through hairpin, a pod on another node)")
        hp = run_probes(_host_port_probes(cluster))
        out(render_matrix(hp, color))
        for p in hp:
            out(f"   {p.source:14} -> {p.address}:{p.port}  answered by {p.answered_by[0]}")
        out("== Deleting pod x/b (CNI DEL) and checking nothing of it is left")
        cluster.delete_pod("x/b")
        left = cluster.leftovers()
        for node, what in left.items():
            out(f"   {node}: {len(what['leases'])} leases ({', '.join(what['leases'])}), "
                f"{len(what['veths'])} pod veths")
        ok = all(p.ok for p in probes + hp) and len(left["node-a"]["leases"]) == 1
        out("== Tearing down (CNI DEL for every pod, namespaces removed)")
    out("== Demo " + ("passed: every probe as expected" if ok else "FAILED"))
    return 0 if ok else 1
