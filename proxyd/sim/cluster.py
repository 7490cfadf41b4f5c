"""A real cluster on one machine: nodes and pods are network namespaces.

A private "world" namespace holds the underlay bridge; every node is a
namespace with its own underlay address and pod CIDR, its CNI configuration
written by ``kube-router-cni`` and its pods plumbed by our CNI plugins exactly
as a container runtime would run them. Every namespace, process and file made
here is removed by ``close()``, also after a failure.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field

from proxyd.sim.cniruntime import Attachment, CniRuntime
from proxyd.sim.netns import Netns, run, veth_pair

UNDERLAY = ipaddress.ip_network("172.30.0.0/24")
CLUSTER_CIDR = ipaddress.ip_network("10.244.0.0/16")
NODE_MASK = 24


@dataclass
class Node:
    name: str
    netns: Netns
    address: str                     # underlay IPv4
    pod_cidr: str
    conflist_path: str
    runtime: CniRuntime | None = None


@dataclass
class Pod:
    namespace: str
    name: str
    node: Node
    netns: Netns
    ports: list[tuple[int, str]]    # (containerPort, protocol)
    host_ports: list[dict] = field(default_factory=list)
    attachment: Attachment | None = None
    ips: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Cluster:
    def __init__(self, node_names: list[str], bin_dir: str | None = None, log=print):
        self.node_names = list(node_names)
        self.bin_dir = bin_dir or os.path.dirname(sys.executable)
        self.log = log
        self.workdir = tempfile.mkdtemp(prefix="krsim-")
        self.world: Netns | None = None
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self._responders: list[subprocess.Popen] = []

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.world = Netns("world")
        self.world.exec("ip link add underlay type bridge")
        self.world.exec("ip link set underlay up")
        subnets = CLUSTER_CIDR.subnets(new_prefix=NODE_MASK)
        next(subnets)  # 10.244.0.0/24 stays unused, as with the controller manager
        for i, name in enumerate(self.node_names):
            self._add_node(name, str(UNDERLAY[10 + i]), str(next(subnets)))
        self._add_static_routes()

    def _add_node(self, name: str, address: str, pod_cidr: str) -> None:
        ns = Netns(name)
        veth_pair(ns, "eth0", self.world, f"u-{len(self.nodes)}")
        self.world.exec(f"ip link set u-{len(self.nodes)} master underlay")
        ns.exec(f"ip addr add {address}/{UNDERLAY.prefixlen} dev eth0")
        ns.sysctl("net.ipv4.ip_forward", 1)
        nodedir = os.path.join(self.workdir, name)
        conflist = os.path.join(nodedir, "net.d", "10-kuberouter.conflist")
        self._write_conf(conflist, pod_cidr, os.path.join(nodedir, "ipam"))
        node = Node(name, ns, address, pod_cidr, conflist)
        node.runtime = CniRuntime.from_file(conflist, [self.bin_dir], node_netns=ns.name)
        self.nodes[name] = node
        self.log(f"node {name}: underlay {address}, pod CIDR {pod_cidr}")

    def _write_conf(self, path: str, pod_cidr: str, data_dir: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run([os.path.join(self.bin_dir, "kube-router-cni"), "generate",
             "--pod-cidr", pod_cidr, "--output", path, "--data-dir", data_dir,
             "--mtu", "1500"])

    def _add_static_routes(self) -> None:
        # Static routes between nodes stand in for BGP pod routing until the
        # daemon's router runs in the simulation.
        for node in self.nodes.values():
            for other in self.nodes.values():
                if other is not node:
                    node.netns.exec(f"ip route replace {other.pod_cidr} via {other.address} "
                                    "proto static")

    def add_pod(self, namespace: str, name: str, node: str,
                ports: list[tuple[int, str]] = (), host_ports: list[dict] = ()) -> Pod:
        n = self.nodes[node]
        pod = Pod(namespace, name, n, Netns(f"{namespace}.{name}"), list(ports), list(host_ports))
        self.pods[pod.key] = pod
        pod.attachment = Attachment(
            container_id=uuid.uuid4().hex, netns=pod.netns.path, ifname="eth0",
            args={"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name,
                  "K8S_POD_INFRA_CONTAINER_ID": "", "IgnoreUnknown": "1"},
            capability_args={"portMappings": pod.host_ports} if pod.host_ports else {})
        result = n.runtime.add(pod.attachment)
        pod.ips = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
        self._start_responder(pod)
        self.log(f"pod {pod.key} on {node}: {', '.join(pod.ips)}")
        return pod

    def _start_responder(self, pod: Pod) -> None:
        if not pod.ports:
            return
        argv = [sys.executable, "-m", "proxyd.sim.responder", pod.key]
        for port, proto in pod.ports:
            argv += [f"--{proto.lower()}", str(port)]
        proc = pod.netns.popen(argv, stdin=subprocess.DEVNULL)
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"listener of {pod.key} did not start: "
                               f"{proc.stderr.read().decode(errors='replace')[-500:]}")

    def delete_pod(self, key: str) -> None:
        pod = self.pods.pop(key)
        try:
            if pod.attachment and pod.attachment.result is not None:
                pod.node.runtime.delete(pod.attachment)
        finally:
            pod.netns.delete()

    def close(self) -> None:
        errors = []
        for key in list(self.pods):
            try:
                self.delete_pod(key)
            except Exception as exc:  # keep tearing down; report at the end
                errors.append(f"{key}: {exc}")
        for node in self.nodes.values():
            node.netns.delete()
        self.nodes.clear()
        if self.world:
            self.world.delete()
            self.world = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("teardown problems: " + "; ".join(errors))

    def leftovers(self) -> dict:
        """What the plugins left on each node: lease files and veths (should be empty)."""
        out = {}
        for node in self.nodes.values():
            ipam_dir = os.path.join(self.workdir, node.name, "ipam")
            leases = []
            for root, _, files in os.walk(ipam_dir):
                leases += [f for f in files
                           if f != "lock" and not f.startswith("last_reserved_ip")]
            links = json.loads(node.netns.exec("ip -j link show type veth").stdout or "[]")
            out[node.name] = {"leases": sorted(leases),
                              "veths": sorted(l["ifname"] for l in links if l["ifname"] != "eth0")}
        return out
