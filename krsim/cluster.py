"""A real cluster on one machine: nodes and pods are network namespaces.

A private "world" namespace holds the underlay bridge and the API server (on
the bridge's address, so every node reaches it); every node is a namespace on
the underlay running kube-router (firewall and BGP router: pod routes between
nodes are learned over BGP, nothing is routed statically), registered as a
Node object whose pod CIDR the API server allocates, with its CNI configuration written by ``kube-router-cni generate
--master URL --node-name NODE`` run inside the node (the operator's path). The
kubelet (kubelet.py) turns Pods bound to a node into namespaces plumbed by our
CNI plugins. Every namespace, process and file made here is removed by
``close()``, also after a failure.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from krsim.apiserver import ApiServer, ServerConfig
from proxyd.kernel import names
from krsim import daemon
from krsim.apiclient import SimApi
from krsim.cniruntime import CniRuntime
from krsim.kubelet import Kubelet
from krsim.netns import Netns, veth_pair

UNDERLAY = ipaddress.ip_network("172.30.0.0/24")
API_ADDRESS = str(UNDERLAY[1])        # the world namespace's address on the underlay
CLUSTER_CIDR = "10.244.0.0/16"
NODE_MASK = 24
# Importing the Kubernetes client takes seconds in the emulated VM (`run --vm`).
SLOW_COMMAND_TIMEOUT = 300


@dataclass
class Node:
    name: str
    netns: Netns
    address: str                     # underlay IPv4
    pod_cidr: str
    conflist_path: str
    runtime: CniRuntime | None = None
    daemon: daemon.NodeDaemon | None = None     # the node's kube-router process


class Cluster:
    def __init__(self, node_names: list[str], bin_dir: str | None = None, log=print):
        self.node_names = list(node_names)
        self.bin_dir = bin_dir or os.path.dirname(sys.executable)
        self.log = log
        self.workdir = tempfile.mkdtemp(prefix="krsim-")
        self.world: Netns | None = None
        self.apiserver: ApiServer | None = None
        self.api: SimApi | None = None
        self.nodes: dict[str, Node] = {}
        self.kubelet: Kubelet | None = None
        self.shown_routes: dict | None = None     # the BGP routes last printed by the harness
        self.service_proxy = daemon.service_proxy_runs()
        self.controllers = daemon.controllers(self.service_proxy)

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def api_url(self) -> str:
        return self.apiserver.url

    @property
    def pods(self) -> dict:
        """Running pods by "ns/name" (the kubelet's sandboxes)."""
        return self.kubelet.sandboxes if self.kubelet else {}

    def start(self) -> None:
        self.world = Netns("world")
        self.world.exec("ip link add underlay type bridge")
        self.world.exec("ip link set underlay up")
        self.world.exec(f"ip addr add {API_ADDRESS}/{UNDERLAY.prefixlen} dev underlay")
        self.apiserver = ApiServer(ServerConfig(host=API_ADDRESS, cluster_cidrs=(CLUSTER_CIDR,),
                                                node_cidr_mask_v4=NODE_MASK))
        # The listening socket is created inside the world namespace and stays there.
        self.world.call(self.apiserver.start)
        self.api = SimApi(self.api_url, self.world.path)
        self.log(f"API server {self.api_url} (in the world namespace, reachable from every node)")
        for i, name in enumerate(self.node_names):
            self._add_node(name, str(UNDERLAY[10 + i]))
        self.kubelet = Kubelet(self, self.api, self.log)
        self.kubelet.start()
        if self.service_proxy:
            self.log("IPVS is available: every node also runs the service proxy")
        for node in self.nodes.values():
            node.daemon = daemon.start_daemon(node, self.api_url, self.workdir, self.bin_dir,
                                              self.log, self.service_proxy)

    def _add_node(self, name: str, address: str) -> None:
        ns = Netns(name)
        try:
            self._plumb_node(ns, name, address)
        except BaseException:  # also SIGINT/SIGTERM: the node is not in self.nodes yet
            ns.delete()
            raise

    def _plumb_node(self, ns: Netns, name: str, address: str) -> None:
        index = len(self.nodes)
        veth_pair(ns, "eth0", self.world, f"u-{index}")
        self.world.exec(f"ip link set u-{index} master underlay")
        ns.exec(f"ip addr add {address}/{UNDERLAY.prefixlen} dev eth0")
        ns.sysctl("net.ipv4.ip_forward", 1)
        self._register_node(name, address)
        nodedir = os.path.join(self.workdir, name)
        conflist = os.path.join(nodedir, "net.d", "10-kuberouter.conflist")
        os.makedirs(os.path.dirname(conflist), exist_ok=True)
        # Run in the node: it reads the pod CIDR from its Node object, as on a real node.
        ns.exec([os.path.join(self.bin_dir, "kube-router-cni"), "generate",
                 "--master", self.api_url, "--node-name", name, "--output", conflist,
                 "--data-dir", os.path.join(nodedir, "ipam"), "--mtu", "1500"],
                timeout=SLOW_COMMAND_TIMEOUT)
        with open(conflist) as f:
            conf = json.load(f)
        pod_cidr = self.api.get("Node", "", name)["spec"]["podCIDR"]
        node = Node(name, ns, address, pod_cidr, conflist)
        node.runtime = CniRuntime(conf, [self.bin_dir], node_netns=ns.name)
        self.nodes[name] = node
        self.log(f"node {name}: underlay {address}, pod CIDR {pod_cidr} (allocated by the API "
                 "server; conflist written by kube-router-cni from the Node object)")

    def _register_node(self, name: str, address: str) -> None:
        self.api.ensure_object({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/hostname": name,
                                     "kubernetes.io/os": "linux"}}})
        self.api.patch_status("Node", "", name, {
            "addresses": [{"type": "InternalIP", "address": address},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]})

    def bgp_routes(self) -> dict[str, list[str]]:
        """Per node, the routes kube-router's router put in its kernel ("dst via gw")."""
        out = {}
        for node in self.nodes.values():
            routes = json.loads(node.netns.exec(
                f"ip -j route show proto {names.ROUTE_PROTOCOL}").stdout or "[]")
            out[node.name] = sorted(f"{r.get('dst')} via {r.get('gateway') or r.get('dev')}"
                                    for r in routes)
        return out

    def missing_routes(self) -> list[str]:
        """Pod CIDRs of other nodes that a node has no BGP-learned route for yet."""
        routes = self.bgp_routes()
        return [f"{node.name} has no route to {other.name}'s {other.pod_cidr}"
                for node in self.nodes.values() for other in self.nodes.values()
                if other is not node and not any(r.startswith(other.pod_cidr + " ")
                                                 for r in routes[node.name])]

    def close(self) -> None:
        errors = []
        if self.kubelet is not None:
            self.kubelet.stop()
            errors += self.kubelet.teardown_all()
            self.kubelet = None
        for node in self.nodes.values():
            if node.daemon is not None:
                node.daemon.stop()
        for node in self.nodes.values():
            node.netns.delete()
        self.nodes.clear()
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.apiserver is not None:
            self.apiserver.stop()
            self.apiserver = None
        if self.world:
            self.world.delete()
            self.world = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("teardown problems: " + "; ".join(errors))

    @staticmethod
    def _firewall_state(node: Node) -> dict:
        """How many of kube-router's policy chains and sets the node's kernel holds."""
        saved = node.netns.exec("iptables-save -t filter").stdout
        chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")]
        sets = node.netns.exec("ipset list -n").stdout.split()
        return {"pod_chains": sum(c.startswith((names.POD_INGRESS_PREFIX, names.POD_EGRESS_PREFIX))
                                  for c in chains),
                "policy_chains": sum(c.startswith(names.POLICY_PREFIX) for c in chains),
                "ipsets": sum(map(names.is_netpol_set, sets))}

    def newest_writes(self) -> dict[str, int]:
        """The API server's resourceVersion of its newest write, per resource."""
        with self.apiserver.store.lock:
            return dict(self.apiserver.store.last_write)

    def leftovers(self) -> dict:
        """Per node, lease files and pod veths beyond the running pods' (should be none)."""
        out = {}
        for node in self.nodes.values():
            ipam_dir = os.path.join(self.workdir, node.name, "ipam")
            leases = []
            for _root, _, files in os.walk(ipam_dir):
                leases += [f for f in files
                           if f != "lock" and not f.startswith("last_reserved_ip")]
            links = json.loads(node.netns.exec("ip -j link show type veth").stdout or "[]")
            running = [b for b in self.pods.values() if b.node is node]
            held = {ip for b in running for ip in b.ips}
            out[node.name] = {
                "leases": sorted(leases), "veths": sorted(
                    link["ifname"] for link in links if link["ifname"] != "eth0"),
                "pods": len(running),
                "stale_leases": sorted(f for f in leases if f not in held),
                "firewall": self._firewall_state(node)}
        return out
