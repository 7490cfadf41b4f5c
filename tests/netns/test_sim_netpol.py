"""Network policy end to end: a 9-pod, 3-port truth table on two simulated nodes.

The expectations come from a small, separate model of the NetworkPolicy API
written here (``Oracle``), not from the daemon's code; ``kube-router-sim``
builds the cluster with the real ``kube-router`` on each node and probes every
pod from every other pod on every declared port, before and after policies
are added, changed and removed.
"""
import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml

SIM = [sys.executable, "-m", "krsim.cli"]
NODE_OF = {"a": "node-a", "b": "node-b", "c": "node-a"}
POD_CIDR = {"node-a": "10.244.0.0/24", "node-b": "10.244.1.0/24"}   # allocated in node order
NAMESPACES = ("x", "y", "z")


@dataclass(frozen=True)
class P:
    ns: str
    name: str

    @property
    def key(self):
        return f"{self.ns}/{self.name}"

    @property
    def labels(self):
        return {"pod": self.name}

    @property
    def ports(self):
        # x/b calls its "alt" port 82: a named port must resolve per pod
        alt = 82 if self.key == "x/b" else 81
        return [("http", 80, "TCP"), ("alt", alt, "TCP"), ("dns", 53, "UDP")]


PODS = [P(ns, name) for ns in NAMESPACES for name in "abc"]


def pod_manifest(p: P):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.ns, "labels": p.labels},
            "spec": {"nodeName": NODE_OF[p.name], "containers": [{"name": "c", "ports": [
                {"name": n, "containerPort": port, "protocol": proto}
                for n, port, proto in p.ports]}]}}


def netpol(ns, name, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


POLICIES = [
    # x/a accepts only namespace y, only on 80
    netpol("x", "a-from-y", {"podSelector": {"matchLabels": {"pod": "a"}},
                             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                          "ports": [{"port": 80}]}]}),
    # y/b accepts nothing
    netpol("y", "b-deny-all", {"podSelector": {"matchLabels": {"pod": "b"}},
                               "policyTypes": ["Ingress"]}),
    # z/c may send only DNS to namespace x, and its named "alt" port to pods called a anywhere
    netpol("z", "c-egress", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"],
                             "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                                         "ports": [{"port": 53, "protocol": "UDP"}]},
                                        {"to": [{"namespaceSelector": {},
                                                 "podSelector": {"matchLabels": {"pod": "a"}}}],
                                         "ports": [{"port": "alt"}]}]}),
    # x/b accepts its "alt" port (82 on x/b) from pods called c in any namespace
    netpol("x", "b-alt-from-c", {"podSelector": {"matchLabels": {"pod": "b"}},
                                 "ingress": [{"from": [{"namespaceSelector": {},
                                                        "podSelector": {"matchLabels": {"pod": "c"}}}],
                                              "ports": [{"port": "alt"}]}]}),
    # y/c accepts only pods on node-a (an ipBlock with an except)
    netpol("y", "c-from-node-a-pods", {"podSelector": {"matchLabels": {"pod": "c"}},
                                       "ingress": [{"from": [{"ipBlock": {
                                           "cidr": "10.244.0.0/16", "except": [POD_CIDR["node-b"]]}}]}]}),
]


class Oracle:
    """NetworkPolicy semantics for the shapes used above, written from the API docs."""

    def __init__(self, policies):
        self.policies = policies

    @staticmethod
    def _selects(sel, labels):
        return all(labels.get(k) == v for k, v in (sel or {}).get("matchLabels", {}).items())

    def _peer_has(self, policy, peer, p: P, ip_of):
        if "ipBlock" in peer:
            import ipaddress
            ip = ipaddress.ip_address(ip_of(p))
            block = peer["ipBlock"]
            return ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except", []))
        ns_ok = (self._selects(peer["namespaceSelector"], {"ns": p.ns}) if "namespaceSelector" in peer
                 else p.ns == policy["metadata"]["namespace"])
        return ns_ok and self._selects(peer.get("podSelector", {}), p.labels)

    def _direction_ok(self, me: P, other: P, port, proto, direction, receiver: P, ip_of):
        ptype = direction.capitalize()
        mine = [pol for pol in self.policies
                if pol["metadata"]["namespace"] == me.ns
                and self._selects(pol["spec"]["podSelector"], me.labels)
                and ptype in pol["spec"].get("policyTypes", ["Ingress"])]
        if not mine:
            return True
        peers_key = "from" if direction == "ingress" else "to"
        for pol in mine:
            for rule in pol["spec"].get(direction, []):
                peers = rule.get(peers_key)
                if peers and not any(self._peer_has(pol, peer, other, ip_of) for peer in peers):
                    continue
                ports = rule.get("ports")
                if not ports:
                    return True
                for rp in ports:
                    want = rp["port"]
                    if isinstance(want, str):
                        want = next((n for name, n, pr in receiver.ports if name == want and pr == proto), None)
                    if want == port and rp.get("protocol", "TCP") == proto:
                        return True
        return False

    def allowed(self, src: P, dst: P, port, proto, ip_of):
        return (self._direction_ok(dst, src, port, proto, "ingress", dst, ip_of)
                and self._direction_ok(src, dst, port, proto, "egress", dst, ip_of))


def truth_table(policies, ip_of):
    oracle = Oracle(policies)
    probes = []
    for src in PODS:
        for dst in PODS:
            if src == dst:
                continue
            for _, port, proto in dst.ports:
                ok = oracle.allowed(src, dst, port, proto, ip_of)
                probes.append({"from": src.key, "to": dst.key, "port": port, "protocol": proto,
                               "expect": "allow" if ok else "deny"})
    return probes


def scenario():
    # The ipBlock above cuts out a whole node's pod CIDR, so any address of a
    # pod's node CIDR stands for the pod's own.
    def ip_of(p: P):
        return POD_CIDR[NODE_OF[p.name]].replace("0/24", "9")

    namespaces = [{"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"ns": ns}}} for ns in NAMESPACES]
    changed = [netpol("x", "a-from-y", {"podSelector": {"matchLabels": {"pod": "a"}},
                                        "ingress": [{"from": [{"namespaceSelector": {
                                            "matchLabels": {"ns": "z"}}}]}]})]
    after_change = [changed[0] if p["metadata"]["name"] == "a-from-y" else p for p in POLICIES]
    return {"nodes": ["node-a", "node-b"], "steps": [
        {"title": "no policy: everything answers", "apply": namespaces + [pod_manifest(p) for p in PODS],
         "probes": truth_table([], ip_of)},
        {"title": "five policies", "apply": POLICIES, "probes": truth_table(POLICIES, ip_of)},
        {"title": "x/a-from-y now admits namespace z on every port", "apply": changed,
         "probes": truth_table(after_change, ip_of)},
        {"title": "policies deleted: everything answers again",
         "delete": [{"kind": "NetworkPolicy", "namespace": p["metadata"]["namespace"],
                     "name": p["metadata"]["name"]} for p in POLICIES],
         "probes": truth_table([], ip_of)},
    ]}


@pytest.mark.timeout(240)
def test_truth_table_with_policies_added_changed_and_removed(tmp_path):
    (tmp_path / "netpol.yaml").write_text(yaml.safe_dump(scenario(), sort_keys=False))
    report = tmp_path / "report.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(SIM + ["run", str(tmp_path / "netpol.yaml"), "--json", str(report)],
                          capture_output=True, text=True, timeout=220, env=env,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    wrong = [(i, p["from"], p["to"], p["port"], p["protocol"], p["expect"], p["result"])
             for i, step in enumerate(data["steps"]) for p in step["probes"]
             if p["expect"] != p["result"]]
    assert wrong == [], proc.stdout[-4000:]
    assert proc.returncode == 0 and data["ok"]
    policy_step = data["steps"][1]["probes"]
    denied = sum(p["result"] == "deny" for p in policy_step)
    assert len(policy_step) == 9 * 8 * 3 and 0.2 < denied / len(policy_step) < 0.8
