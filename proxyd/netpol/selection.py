"""Which pods a NetworkPolicy selects, answered from indexes instead of a scan.

``PodIndex`` keeps the cluster's pods (model.Pod) by key, by namespace, by
label (key=value) and by address, and the namespaces' labels. ``PolicySpec``
is one NetworkPolicy parsed once (selectors checked, ports and ipBlocks read);
it answers, for one pod, whether the policy targets it and which of its rules
count it as a peer. The semantics are model.py's, which stays the reference:
the firewall state built from these answers equals model + build from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from proxyd.k8s.labels import check_selector, selects
from proxyd.netpol.model import (DIRECTIONS, NAME_LABEL, PEERS_KEY, Pod, PortMatch, collapse,
                                 ip_block, policy_types, port_match)


class PodIndex:
    def __init__(self, node: str):
        self.node = node
        self.pods: dict[str, Pod] = {}
        self.local: dict[str, Pod] = {}
        self.by_ns: dict[str, set[str]] = {}
        self.by_label: dict[tuple[str, str], set[str]] = {}
        self.by_ip: dict[str, set[str]] = {}
        self.ns_labels: dict[str, dict[str, str]] = {}

    def add(self, pod: Pod) -> None:
        self.pods[pod.key] = pod
        if pod.node == self.node:
            self.local[pod.key] = pod
        self.by_ns.setdefault(pod.namespace, set()).add(pod.key)
        for item in pod.labels.items():
            self.by_label.setdefault(item, set()).add(pod.key)
        for ip in pod.ips:
            self.by_ip.setdefault(ip, set()).add(pod.key)

    def remove(self, pod: Pod) -> None:
        del self.pods[pod.key]
        self.local.pop(pod.key, None)
        _discard(self.by_ns, pod.namespace, pod.key)
        for item in pod.labels.items():
            _discard(self.by_label, item, pod.key)
        for ip in pod.ips:
            _discard(self.by_ip, ip, pod.key)

    def labels_of(self, namespace: str) -> Mapping[str, str]:
        return self.ns_labels.get(namespace) or {NAME_LABEL: namespace}

    def in_namespaces(self, namespaces: Iterable[str], pod_selector: Mapping) -> Iterator[Pod]:
        """The pods of these namespaces that ``pod_selector`` selects; a matchLabels
        narrows the search to the smallest of its label's pods."""
        namespaces = set(namespaces)
        wanted = list((pod_selector.get("matchLabels") or {}).items())
        if wanted:
            keys = min((self.by_label.get(item, set()) for item in wanted), key=len)
            pods = (self.pods[k] for k in keys)
            pods = (p for p in pods if p.namespace in namespaces)
        else:
            pods = (self.pods[k] for ns in namespaces for k in self.by_ns.get(ns, ()))
        return (p for p in pods if selects(pod_selector, p.labels))


def _discard(index: dict, value, key: str) -> None:
    keys = index.get(value)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[value]


@dataclass(frozen=True)
class PeerSpec:
    pod_selector: Mapping             # {} = every pod (in scope)
    ns_selector: Mapping | None       # None = the policy's own namespace


@dataclass(frozen=True)
class RuleSpec:
    index: int
    peers: tuple[PeerSpec, ...] | None    # None = everyone
    nets: tuple[str, ...]                 # ipBlocks, excepts cut out
    ports: tuple[PortMatch, ...]

    @property
    def named(self) -> bool:
        return any(isinstance(p.port, str) for p in self.ports)


@dataclass(frozen=True)
class PolicySpec:
    namespace: str
    name: str
    pod_selector: Mapping
    rules: Mapping[str, tuple[RuleSpec, ...]]     # direction -> rules, for its policyTypes

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def reads_namespaces(self) -> bool:
        """Whether a namespace's labels can change what the policy selects."""
        return any(p.ns_selector is not None for rules in self.rules.values()
                   for r in rules for p in r.peers or ())

    def targets(self, pod: Pod | None, node: str) -> bool:
        return (pod is not None and pod.node == node and pod.namespace == self.namespace
                and selects(self.pod_selector, pod.labels))

    def counts(self, rule: RuleSpec, pod: Pod | None, index: PodIndex) -> bool:
        """Whether ``pod`` is one of the rule's peer pods."""
        if pod is None or rule.peers is None:
            return False
        for peer in rule.peers:
            if peer.ns_selector is None:
                in_scope = pod.namespace == self.namespace
            else:
                in_scope = selects(peer.ns_selector, index.labels_of(pod.namespace))
            if in_scope and selects(peer.pod_selector, pod.labels):
                return True
        return False

    def peer_pods(self, rule: RuleSpec, index: PodIndex) -> dict[str, Pod]:
        found: dict[str, Pod] = {}
        for peer in rule.peers or ():
            if peer.ns_selector is None:
                namespaces: Iterable[str] = (self.namespace,)
            else:
                namespaces = [ns for ns in index.by_ns
                              if selects(peer.ns_selector, index.labels_of(ns))]
            found.update((p.key, p) for p in index.in_namespaces(namespaces, peer.pod_selector))
        return found


def parse_policy(obj: Mapping) -> PolicySpec:
    """One NetworkPolicy, checked whole: a ValueError/KeyError/TypeError names what is wrong."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    selector = spec.get("podSelector")
    selector = selector if selector is not None else {}
    check_selector(selector)
    rules = {}
    for ptype in policy_types(spec):
        direction = ptype.lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown policyType {ptype!r}")
        rules[direction] = tuple(_parse_rule(i, raw or {}, direction)
                                 for i, raw in enumerate(spec.get(direction) or ()))
    return PolicySpec(meta["namespace"], meta["name"], selector, rules)


def _parse_rule(index: int, raw: Mapping, direction: str) -> RuleSpec:
    ports = tuple(port_match(p) for p in raw.get("ports") or ())
    peers_raw = raw.get(PEERS_KEY[direction]) or ()
    if not peers_raw:
        return RuleSpec(index, None, (), ports)
    peers, nets = [], []
    for peer in peers_raw:
        if peer.get("ipBlock"):
            nets += ip_block(peer["ipBlock"])
            continue
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if pod_sel is None and ns_sel is None:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        check_selector(pod_sel)
        check_selector(ns_sel)
        peers.append(PeerSpec(pod_sel if pod_sel is not None else {}, ns_sel))
    return RuleSpec(index, tuple(peers), tuple(str(n) for n in collapse(nets)), ports)
