"""API objects -> what each NetworkPolicy means on this node, as plain data.

Kubernetes semantics (networking.k8s.io/v1):
  * a pod is isolated for ingress (egress) when some policy in its namespace
    selects it and lists "Ingress" ("Egress") in policyTypes; it then accepts
    (sends) only what one of those policies' rules allows;
  * a rule with no peers allows every peer; with no ports, every port;
  * peers: podSelector (policy's namespace), namespaceSelector (every pod in
    the matching namespaces), both (matching pods in matching namespaces),
    ipBlock (cidr minus its excepts);
  * a named port is resolved against the pod that receives the traffic: the
    selected pod for ingress, the peer pod for egress.
Pods without IPs, host-network pods and finished pods are neither targets nor peers.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from proxyd.k8s.labels import check_selector, selects

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DIRECTIONS = ("ingress", "egress")
PEERS_KEY = {"ingress": "from", "egress": "to"}
_FINISHED = ("Succeeded", "Failed")
NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, eq=False)      # one object per pod: identity is equality, and cheap
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    node: str
    ips: tuple[str, ...]
    named_ports: Mapping[tuple[str, str], int]      # (port name, protocol) -> number

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PortMatch:
    protocol: str                 # TCP, UDP, SCTP
    port: int | str | None        # None = every port of the protocol; str = a named port
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule: its peers (None = everyone) and ports (() = every port).

    Peers are addresses and networks as text, both families: pod IPs as the API
    gives them, ipBlocks with their excepts cut out.
    """
    index: int
    peers: tuple[str, ...] | None
    peer_pods: tuple[Pod, ...]          # the pods among the peers (named ports resolve on them)
    ports: tuple[PortMatch, ...]


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    targets: tuple[Pod, ...]                        # selected pods on this node
    rules: Mapping[str, tuple[Rule, ...]]           # direction -> rules, for its policyTypes

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class NodeFirewall:
    """Everything the builder needs: the node's pods and the policies that isolate them."""
    local_pods: list[Pod] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # "<kind> <key>: why it was skipped"
    _isolating: dict[tuple[str, str], list[Policy]] = field(default_factory=dict, repr=False)

    def add(self, policy: Policy) -> None:
        self.policies.append(policy)
        for direction in policy.rules:
            for pod in policy.targets:
                self._isolating.setdefault((pod.key, direction), []).append(policy)

    def policies_for(self, pod: Pod, direction: str) -> list[Policy]:
        """The policies isolating ``pod`` in ``direction``, in policy order."""
        return self._isolating.get((pod.key, direction), [])


def pod_from(obj: Mapping) -> Pod | None:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in _FINISHED:
        return None
    ips = tuple(p["ip"] for p in status.get("podIPs") or () if p.get("ip")) or (
        (status["podIP"],) if status.get("podIP") else ())
    if not ips:
        return None
    named = {}
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") and port.get("containerPort"):
                named.setdefault((port["name"], port.get("protocol") or "TCP"),
                                 int(port["containerPort"]))
    return Pod(meta.get("namespace", ""), meta.get("name", ""), dict(meta.get("labels") or {}),
               spec.get("nodeName") or "", ips, named)


def namespace_labels(namespaces: Iterable[Mapping]) -> dict[str, dict[str, str]]:
    out = {}
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels.setdefault(NAME_LABEL, meta.get("name", ""))   # the API server always sets it
        out[meta.get("name", "")] = labels
    return out


def build_node_firewall(node: str, pods: Iterable[Mapping], namespaces: Iterable[Mapping],
                        policies: Iterable[Mapping]) -> NodeFirewall:
    """The pure heart of the controller: API objects in, this node's firewall model out.

    A policy that cannot be understood is skipped and named in ``problems``;
    every other policy still applies.
    """
    all_pods = sorted((p for p in map(pod_from, pods) if p is not None), key=lambda p: p.key)
    ns_labels = namespace_labels(namespaces)
    fw = NodeFirewall(local_pods=[p for p in all_pods if p.node == node])
    for obj in sorted(policies, key=_policy_sort_key):
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        try:
            fw.add(_policy(obj, fw.local_pods, all_pods, ns_labels))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            fw.problems.append(f"NetworkPolicy {key}: {type(e).__name__}: {e}")
    return fw


def _policy_sort_key(obj: Mapping) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def policy_types(spec: Mapping) -> list[str]:
    """spec.policyTypes, or the API server's default when a client left it out."""
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _policy(obj: Mapping, local_pods: list[Pod], all_pods: list[Pod],
            ns_labels: Mapping[str, Mapping[str, str]]) -> Policy:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    namespace = meta["namespace"]
    selector = spec.get("podSelector")
    check_selector(selector)
    targets = tuple(p for p in local_pods if p.namespace == namespace
                    and selects(selector if selector is not None else {}, p.labels))
    rules = {}
    for ptype in policy_types(spec):
        direction = ptype.lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown policyType {ptype!r}")
        rules[direction] = tuple(
            _rule(i, raw or {}, direction, namespace, all_pods, ns_labels)
            for i, raw in enumerate(spec.get(direction) or ()))
    return Policy(namespace, meta["name"], targets, rules)


def _rule(index: int, raw: Mapping, direction: str, namespace: str, all_pods: list[Pod],
          ns_labels: Mapping[str, Mapping[str, str]]) -> Rule:
    ports = tuple(port_match(p) for p in raw.get("ports") or ())
    peers_raw = raw.get(PEERS_KEY[direction]) or ()
    if not peers_raw:
        # An egress named port to "anyone" still resolves on the receiving pods: all of them.
        named = direction == "egress" and any(isinstance(p.port, str) for p in ports)
        return Rule(index, None, tuple(all_pods) if named else (), ports)
    pods: dict[str, Pod] = {}
    nets: list[Network] = []
    for peer in peers_raw:
        if peer.get("ipBlock"):
            nets += ip_block(peer["ipBlock"])
            continue
        for pod in _peer_pods(peer, namespace, all_pods, ns_labels):
            pods[pod.key] = pod
    # Pod addresses stay text: a set holds them as they are, and parsing
    # thousands of them on every sync is the controller's largest cost.
    peers = {ip for pod in pods.values() for ip in pod.ips} | {str(n) for n in collapse(nets)}
    peer_pods = tuple(pods[k] for k in sorted(pods))
    return Rule(index, tuple(sorted(peers)), peer_pods, ports)


def _peer_pods(peer: Mapping, namespace: str, all_pods: list[Pod],
               ns_labels: Mapping[str, Mapping[str, str]]) -> list[Pod]:
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if pod_sel is None and ns_sel is None:
        raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
    check_selector(pod_sel)
    check_selector(ns_sel)
    if ns_sel is None:
        in_scope = [p for p in all_pods if p.namespace == namespace]
    else:
        in_scope = [p for p in all_pods if selects(ns_sel, ns_labels.get(p.namespace, {
            NAME_LABEL: p.namespace}))]
    return [p for p in in_scope if selects(pod_sel if pod_sel is not None else {}, p.labels)]


def ip_block(block: Mapping) -> list[Network]:
    """cidr minus every except, as the fewest networks."""
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    nets = [cidr]
    for text in block.get("except") or ():
        cut = ipaddress.ip_network(text, strict=False)
        if cut.version != cidr.version:
            raise ValueError(f"except {text} is not in the family of {block['cidr']}")
        out = []
        for net in nets:
            if cut.subnet_of(net):
                out += net.address_exclude(cut)
            elif not net.subnet_of(cut):
                out.append(net)
        nets = out
    return nets


def collapse(nets: Iterable[Network]) -> list[Network]:
    """Union per family, smallest list, IPv4 first."""
    out: list[Network] = []
    for version in (4, 6):
        out += ipaddress.collapse_addresses(n for n in nets if n.version == version)
    return out


def port_match(raw: Mapping) -> PortMatch:
    protocol = (raw.get("protocol") or "TCP").upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise ValueError(f"unknown protocol {protocol!r}")
    port, end = raw.get("port"), raw.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if end is not None and not (isinstance(port, int) and port <= int(end) < 65536):
        raise ValueError(f"endPort {end} needs a numeric port <= endPort")
    return PortMatch(protocol, port, int(end) if end is not None else None)
