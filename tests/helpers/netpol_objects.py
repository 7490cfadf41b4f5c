"""Small factories for the API objects the network policy tests feed the builder."""
from __future__ import annotations


def namespace(name, **labels):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def pod(ns, name, ip, node="node-a", labels=None, ports=(), host_network=False, phase="Running",
        ips=None):
    return {"metadata": {"namespace": ns, "name": name, "labels": dict(labels or {})},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [dict(p) for p in ports]}]},
            "status": {"phase": phase, "podIP": ip,
                       "podIPs": [{"ip": i} for i in (ips or ([ip] if ip else []))]}}


def policy(ns, name, selector=None, ingress=None, egress=None, types=None):
    spec = {"podSelector": selector if selector is not None else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}
