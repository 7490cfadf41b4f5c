"""The node's firewall kept as per-object fragments, updated one change at a time (pure).

``FirewallState`` holds what build.py makes from scratch -- chains per family
and ipsets -- and keeps it current by change, at the cost of what a change
touches:
  * a pod is tested once against each policy (does the policy target it, which
    of its rules count it as a peer); only the peer sets it enters or leaves get
    an entry more or less, and only policies whose targets moved are rebuilt,
    with the pod chains and top chains of the local pods whose isolation moved;
  * a policy is rebuilt alone, from the indexes (selection.py);
  * new labels on a namespace rebuild the policies that select namespaces.
``take_delta()`` hands over the chains and sets touched since its last call
(None: gone); the appliers write only what differs from what they applied.
A policy that cannot be understood is left out and named in ``problems``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from proxyd.k8s.cache import object_key
from proxyd.kernel import names
from proxyd.kernel.state import KINDS, SET_FAMILY, Chain, IPSet
from proxyd.netpol import build
from proxyd.netpol.build import DesiredFirewall, FamilyFirewall, NodeRanges
from proxyd.netpol.model import Pod, Policy, Rule, namespace_labels, pod_from
from proxyd.netpol.selection import PodIndex, PolicySpec, RuleSpec, parse_policy

_PROBLEMS = (ValueError, TypeError, KeyError, AttributeError)


@dataclass
class Delta:
    chains: dict[int, dict[str, tuple[str, ...] | None]] = field(default_factory=dict)
    sets: dict[str, IPSet | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sets) or any(self.chains.values())


def same_pod(a: Pod, b: Pod) -> bool:
    """Whether two versions of a pod are the same to the firewall."""
    return (a.labels, a.node, a.ips, a.named_ports) == (b.labels, b.node, b.ips, b.named_ports)


def _canonical(ip: str) -> str:
    return KINDS["hash:net"](ip, 6 if ":" in ip else 4)[1]


class FirewallState:
    def __init__(self, node: str, families: Iterable[int], ranges: NodeRanges):
        self.node, self.families, self.ranges = node, tuple(sorted(families)), ranges
        self.index = PodIndex(node)
        self.specs: dict[str, PolicySpec] = {}
        self.problems: dict[str, str] = {}
        self.targets: dict[str, dict[str, Pod]] = {}            # policy -> local pods it selects
        self.isolating: dict[tuple[str, str], set[str]] = {}    # (pod, direction) -> policies
        self.peer_sets: dict[str, IPSet] = {}                   # every rule's peers, always kept
        self.chains: dict[int, dict[str, tuple[str, ...]]] = {f: {} for f in self.families}
        self.sets: dict[str, IPSet] = {}
        self._built: dict[str, tuple[set[tuple[int, str]], set[str]]] = {}   # policy -> its names
        self._touched_chains: dict[int, set[str]] = {f: set() for f in self.families}
        self._touched_sets: set[str] = set()
        self._dirty_pods: set[str] = set()

    # ---- what the builders and the controller read -------------------------------------
    @property
    def local_pods(self) -> list[Pod]:
        return [self.index.local[k] for k in sorted(self.index.local)]

    def policies_for(self, pod: Pod, direction: str) -> list[PolicySpec]:
        return [self.specs[k] for k in sorted(self.isolating.get((pod.key, direction), ()))]

    def problem_list(self) -> list[str]:
        return [self.problems[k] for k in sorted(self.problems)]

    def desired(self) -> DesiredFirewall:
        out = DesiredFirewall(sets=[self.sets[n] for n in sorted(self.sets)])
        for family in self.families:
            out.families[family] = FamilyFirewall(
                [Chain(n, r) for n, r in sorted(self.chains[family].items())], build.hooks())
        return out

    def take_delta(self) -> Delta:
        delta = Delta({f: {n: self.chains[f].get(n) for n in sorted(touched)}
                       for f, touched in self._touched_chains.items()},
                      {n: self.sets.get(n) for n in sorted(self._touched_sets)})
        self._touched_chains = {f: set() for f in self.families}
        self._touched_sets = set()
        return delta

    # ---- changes --------------------------------------------------------------------------
    def load(self, pods: Iterable[Mapping], namespaces: Iterable[Mapping],
             policies: Iterable[Mapping]) -> None:
        """Everything from the caches (the full resync); follow with ``desired()``."""
        for pod in filter(None, map(pod_from, pods)):
            self.index.add(pod)
        self.index.ns_labels = namespace_labels(namespaces)
        for obj in policies:
            self.policy_changed(object_key(obj), obj)
        self._refresh(top=True)

    def update(self, changes: Iterable) -> Delta:
        """Tracker changes (kind, key, current) in; what they touched out."""
        handlers = {"pods": self.pod_changed, "namespaces": self.namespace_changed,
                    "networkpolicies": self.policy_changed}
        for change in changes:
            handlers[change.kind](change.key, change.current)
        self._refresh()
        return self.take_delta()

    def pod_changed(self, key: str, obj: Mapping | None) -> None:
        old = self.index.pods.get(key)
        new = pod_from(obj) if obj is not None else None
        if old is None and new is None or (old and new and same_pod(old, new)):
            return
        if old is not None:
            self.index.remove(old)
        if new is not None:
            self.index.add(new)
        for spec in list(self.specs.values()):
            self._pod_in_policy(spec, old, new)
        self._dirty_pods.update(p.key for p in (old, new) if p is not None and p.node == self.node)

    def namespace_changed(self, name: str, obj: Mapping | None) -> None:
        labels = namespace_labels([obj])[name] if obj is not None else None
        if self.index.ns_labels.get(name) == labels:
            return
        if labels is None:
            del self.index.ns_labels[name]
        else:
            self.index.ns_labels[name] = labels
        for spec in [s for s in self.specs.values() if s.reads_namespaces]:
            self._drop_policy(spec.key)
            self._add_policy(spec)

    def policy_changed(self, key: str, obj: Mapping | None) -> None:
        spec = None
        if obj is not None:
            try:
                spec = parse_policy(obj)
            except _PROBLEMS as e:
                self._drop_policy(key)
                self.problems[key] = f"NetworkPolicy {key}: {type(e).__name__}: {e}"
                return
            if self.specs.get(key) == spec:
                return
        self._drop_policy(key)
        if spec is not None:
            self._add_policy(spec)

    # ---- policies -------------------------------------------------------------------------
    def _add_policy(self, spec: PolicySpec) -> None:
        key = spec.key
        self.specs[key] = spec
        self.targets[key] = {k: p for k, p in self.index.local.items() if spec.targets(p, self.node)}
        for pod_key in self.targets[key]:
            for direction in spec.rules:
                self._isolate(None, pod_key, key, direction)
        for direction, rule in _peered(spec):
            members = spec.peer_pods(rule, self.index).values()
            for family in self.families:
                entries = [ip for p in members for ip in p.ips if (":" in ip) == (family == 6)]
                name = build.peer_set(spec.namespace, spec.name, direction, rule.index, family)
                self.peer_sets[name] = IPSet(name, "hash:net", SET_FAMILY[family], frozenset(
                    entries + build.peer_entries(rule.nets, family)))
        self._build_policy(spec)

    def _drop_policy(self, key: str) -> None:
        self.problems.pop(key, None)
        spec = self.specs.pop(key, None)
        if spec is None:
            return
        for pod_key in self.targets.pop(key, {}):
            for direction in spec.rules:
                self._isolate(pod_key, None, key, direction)
        for direction, rule in _peered(spec):
            for family in self.families:
                del self.peer_sets[build.peer_set(spec.namespace, spec.name, direction,
                                                  rule.index, family)]
        self._build_policy(spec)

    def _build_policy(self, spec: PolicySpec) -> None:
        """(Re)write the policy's chains and sets: none while it targets no local pod."""
        old_chains, old_sets = self._built.pop(spec.key, (set(), set()))
        chains: set[tuple[int, str]] = set()
        sets: set[str] = set()
        if self.targets.get(spec.key) and self.specs.get(spec.key) is spec:
            policy = self._policy_object(spec)
            for family in self.families:
                named: dict[str, IPSet] = {}
                for chain in build.policy_chains(policy, family, named, peer_sets=False):
                    self._put_chain(family, chain.name, chain.rules)
                    chains.add((family, chain.name))
                for direction, rule in _peered(spec):
                    name = build.peer_set(spec.namespace, spec.name, direction, rule.index, family)
                    named[name] = self.peer_sets[name]
                for name, s in named.items():
                    self._put_set(name, s)
                    sets.add(name)
            self._built[spec.key] = (chains, sets)
        for family, name in old_chains - chains:
            self._put_chain(family, name, None)
        for name in old_sets - sets:
            self._put_set(name, None)

    def _policy_object(self, spec: PolicySpec) -> Policy:
        """The model's view of the policy, as build.py reads it (peer addresses left out:
        this state keeps the peer sets itself)."""
        targets = self.targets[spec.key]
        rules = {}
        for direction, specs in spec.rules.items():
            rules[direction] = tuple(
                Rule(r.index, None if r.peers is None else (),
                     self._receivers(spec, r) if direction == "egress" and r.named else (),
                     r.ports) for r in specs)
        return Policy(spec.namespace, spec.name, tuple(targets[k] for k in sorted(targets)), rules)

    def _receivers(self, spec: PolicySpec, rule: RuleSpec) -> tuple[Pod, ...]:
        """An egress rule's peer pods (every pod for a rule without peers): a named port
        resolves on them."""
        pods = self.index.pods if rule.peers is None else spec.peer_pods(rule, self.index)
        return tuple(pods[k] for k in sorted(pods))

    # ---- one pod against one policy ----------------------------------------------------------
    def _pod_in_policy(self, spec: PolicySpec, old: Pod | None, new: Pod | None) -> None:
        rebuild = False
        was, now = spec.targets(old, self.node), spec.targets(new, self.node)
        if was or now:
            targets = self.targets[spec.key]
            if was:
                del targets[old.key]
            if now:
                targets[new.key] = new
            for direction in spec.rules:
                self._isolate(old.key if was else None, new.key if now else None, spec.key,
                              direction)
            rebuild = True
        for direction, rules in spec.rules.items():
            for rule in rules:
                named_egress = direction == "egress" and rule.named
                if rule.peers is None:
                    rebuild |= named_egress
                    continue
                was = spec.counts(rule, old, self.index)
                now = spec.counts(rule, new, self.index)
                if was or now:
                    self._move_peer(spec, direction, rule, old if was else None,
                                    new if now else None)
                    rebuild |= named_egress
        if rebuild:
            self._build_policy(spec)

    def _move_peer(self, spec: PolicySpec, direction: str, rule: RuleSpec,
                   old: Pod | None, new: Pod | None) -> None:
        added = set(new.ips) if new is not None else set()
        gone = [ip for ip in (old.ips if old is not None else ()) if ip not in added
                and not self._still_peer(spec, rule, ip, new)]
        for family in self.families:
            name = build.peer_set(spec.namespace, spec.name, direction, rule.index, family)
            mine = (lambda ip: (":" in ip) == (family == 6))
            current = self.peer_sets[name]
            updated = current.changed([ip for ip in added if mine(ip)],
                                      [_canonical(ip) for ip in gone if mine(ip)])
            if updated.entries == current.entries:
                continue
            self.peer_sets[name] = updated
            if name in self._built.get(spec.key, ((), ()))[1]:
                self._put_set(name, updated)

    def _still_peer(self, spec: PolicySpec, rule: RuleSpec, ip: str, new: Pod | None) -> bool:
        """Whether an address a pod left is still in the rule's set for another reason: an
        ipBlock holds it, or another peer pod has it."""
        family = 6 if ":" in ip else 4
        if _canonical(ip) in {_canonical(n) for n in build.peer_entries(rule.nets, family)}:
            return True
        return any(spec.counts(rule, self.index.pods[k], self.index)
                   for k in self.index.by_ip.get(ip, ()) if new is None or k != new.key)

    # ---- local pods ------------------------------------------------------------------------
    def _isolate(self, old_pod: str | None, new_pod: str | None, policy: str,
                 direction: str) -> None:
        if old_pod is not None:
            isolating = self.isolating.get((old_pod, direction), set())
            isolating.discard(policy)
            if not isolating:
                self.isolating.pop((old_pod, direction), None)
            self._dirty_pods.add(old_pod)
        if new_pod is not None:
            self.isolating.setdefault((new_pod, direction), set()).add(policy)
            self._dirty_pods.add(new_pod)

    def _refresh(self, top: bool = False) -> None:
        """Rewrite the pod chains of the local pods whose isolation or addresses moved, and
        with them the top chains."""
        if not (self._dirty_pods or top):
            return
        for key in sorted(self._dirty_pods):
            pod = self.index.local.get(key)
            namespace, _, name = key.partition("/")
            for direction in ("ingress", "egress"):
                policies = self.policies_for(pod, direction) if pod is not None else []
                for family in self.families:
                    chain = names.pod_chain(namespace, name, direction)
                    self._put_chain(family, chain, build.pod_chain(
                        pod, direction, policies, family).rules if policies else None)
        self._dirty_pods = set()
        for family in self.families:
            for chain in build.top_chains(self, family, self.ranges):
                self._put_chain(family, chain.name, chain.rules)

    def _put_chain(self, family: int, name: str, rules: tuple[str, ...] | None) -> None:
        if rules is None:
            self.chains[family].pop(name, None)
        else:
            self.chains[family][name] = tuple(rules)
        self._touched_chains[family].add(name)

    def _put_set(self, name: str, s: IPSet | None) -> None:
        if s is None:
            self.sets.pop(name, None)
        else:
            self.sets[name] = s
        self._touched_sets.add(name)


def _peered(spec: PolicySpec):
    """(direction, rule) for every rule of the policy that has peers (and so a peer set)."""
    return [(d, r) for d, rules in spec.rules.items() for r in rules if r.peers is not None]

