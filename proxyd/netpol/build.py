"""The node's firewall model -> the filter-table chains and ipsets that enforce it.

Pure: no I/O. Every rule is written exactly as iptables-save prints it (see
proxyd/kernel/iptables.py), so an unchanged chain is never rewritten.

How a packet walks it (both families, filter table):
  INPUT/FORWARD/OUTPUT -> KUBE-ROUTER-<hook> (first rule, always present)
      established/related -> RETURN (replies and admitted flows are never re-judged)
      [INPUT only] to a service VIP range or a local NodePort -> RETURN: the
          service proxy's forwarded packet is judged after its DNAT, in OUTPUT
      -s <isolated pod>  -> KUBE-POD-OUT-<pod>  (its egress)
      -d <isolated pod>  -> KUBE-POD-IN-<pod>   (its ingress)
  KUBE-POD-IN/OUT-<pod>
      invalid -> DROP; [ingress] from the node itself -> RETURN (kubelet probes)
      -> KUBE-NWPLCY-<policy> for each policy isolating the pod in that direction;
         a rule that matches sets the allow bit
      bit not set -> NFLOG group 100 (rate limited), REJECT
      clear the bit, RETURN: the other direction's chain (a pod on the same
      node) judges the packet afresh.
A pod that no policy isolates has no chain and is not touched.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from proxyd.kernel import names
from proxyd.kernel.state import SET_FAMILY, Chain, Hook, IPSet, save_quote
from proxyd.netpol.model import Network, NodeFirewall, Pod, Policy, PortMatch, Rule

_HOST_BITS = {4: 32, 6: 128}
_REJECT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
_MARK = f"-j MARK --set-xmark {names.NETPOL_ALLOW_MARK}"
_NOT_ALLOWED = f"-m mark ! --mark {names.NETPOL_ALLOW_MARK}"


@dataclass(frozen=True)
class NodeRanges:
    """Flag-given ranges the INPUT chain lets through to the service proxy."""
    service_cidrs: tuple[Network, ...] = ()
    external_cidrs: tuple[Network, ...] = ()
    node_ports: tuple[int, int] = (30000, 32767)


@dataclass
class FamilyFirewall:
    chains: list[Chain] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)


@dataclass
class DesiredFirewall:
    families: dict[int, FamilyFirewall] = field(default_factory=dict)
    sets: list[IPSet] = field(default_factory=list)

    def set_names(self) -> set[str]:
        return {s.name for s in self.sets}


def build_firewall(fw: NodeFirewall, families: Iterable[int], ranges: NodeRanges) -> DesiredFirewall:
    desired = DesiredFirewall()
    for family in sorted(families):
        out = desired.families[family] = FamilyFirewall()
        out.hooks = hooks()
        sets: dict[str, IPSet] = {}
        out.chains = (top_chains(fw, family, ranges) + _pod_chains(fw, family)
                      + [c for p in fw.policies if p.targets       # none here: nothing to build
                         for c in policy_chains(p, family, sets)])
        desired.sets += sorted(sets.values(), key=lambda s: s.name)
    return desired


# ---- top-level and per-pod chains -------------------------------------------

def _isolated(fw: NodeFirewall, direction: str) -> list[Pod]:
    return [p for p in fw.local_pods if fw.policies_for(p, direction)]


def _pod_jumps(fw: NodeFirewall, family: int, directions=("egress", "ingress")) -> list[str]:
    rules = []
    for direction, flag in (("egress", "-s"), ("ingress", "-d")):
        if direction not in directions:
            continue
        for pod in _isolated(fw, direction):
            chain = names.pod_chain(pod.namespace, pod.name, direction)
            for ip in _ips(pod, family):
                rules.append(f"{flag} {ip}/{_HOST_BITS[family]} "
                             f"{_comment(f'{direction} of {pod.key}')}-j {chain}")
    return rules


def hooks() -> list[Hook]:
    return [Hook(builtin, f"-m comment --comment {save_quote(names.NETPOL_HOOK_COMMENT)} "
                          f"-j {chain}")
            for builtin, chain in names.NETPOL_TOP_CHAINS.items()]


def top_chains(fw: NodeFirewall, family: int, ranges: NodeRanges) -> list[Chain]:
    """``fw``: anything with the node's ``local_pods`` (sorted by key) and
    ``policies_for(pod, direction)``."""
    established = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    to_services = [f"-d {net} {_comment('to the service cluster IP range')}-j RETURN"
                   for net in ranges.service_cidrs if net.version == family]
    to_services += [f"-p {proto} {_comment(f'to local {proto.upper()} node ports')}"
                    f"-m addrtype --dst-type LOCAL -m multiport --dports "
                    f"{ranges.node_ports[0]}:{ranges.node_ports[1]} -j RETURN"
                    for proto in ("tcp", "udp")]
    to_services += [f"-d {net} {_comment('to service external IPs')}-j RETURN"
                    for net in ranges.external_cidrs if net.version == family]
    jumps = _pod_jumps(fw, family)
    from_pods = _pod_jumps(fw, family, ("egress",))      # INPUT never carries a pod's ingress
    return [Chain(names.NETPOL_INPUT, tuple([established] + to_services + from_pods)),
            Chain(names.NETPOL_FORWARD, tuple([established] + jumps)),
            Chain(names.NETPOL_OUTPUT, tuple([established] + jumps))]


def _pod_chains(fw: NodeFirewall, family: int) -> list[Chain]:
    return [pod_chain(pod, direction, fw.policies_for(pod, direction), family)
            for direction in ("ingress", "egress") for pod in _isolated(fw, direction)]


def pod_chain(pod: Pod, direction: str, policies: Iterable[Policy], family: int) -> Chain:
    """One isolated local pod's verdict in one direction: the policies isolating it, in order."""
    rules = ["-m conntrack --ctstate INVALID -j DROP"]
    if direction == "ingress":
        rules.append("-m addrtype --src-type LOCAL -j RETURN")
    rules += [f"{_comment(f'policy {p.key}')}"
              f"-j {names.policy_chain(p.namespace, p.name, direction)}" for p in policies]
    rules += [f"{_NOT_ALLOWED} -m limit --limit 10/min --limit-burst 10 "
              f"-j NFLOG --nflog-group {names.NFLOG_GROUP}",
              f"{_NOT_ALLOWED} -j REJECT --reject-with {_REJECT[family]}",
              f"-j MARK --set-xmark {names.NETPOL_CLEAR_MARK}"]
    return Chain(names.pod_chain(pod.namespace, pod.name, direction), tuple(rules))


# ---- per-policy chains and their sets -----------------------------------------

def policy_chains(policy: Policy, family: int, sets: dict[str, IPSet],
                  peer_sets: bool = True) -> list[Chain]:
    """The policy's chain per direction; its sets go into ``sets`` (without the rules'
    peer sets when ``peer_sets`` is False: a caller that keeps those itself)."""
    chains = []
    for direction, rules in policy.rules.items():
        lines = []
        for rule in rules:
            lines += _rule_lines(policy, direction, rule, family, sets, peer_sets)
        chains.append(Chain(names.policy_chain(policy.namespace, policy.name, direction),
                            tuple(lines)))
    return chains


def peer_set(namespace: str, name: str, direction: str, index: int, family: int) -> str:
    """The set of one rule's peers (hash:net: pod addresses and ipBlocks)."""
    prefix = names.SOURCE_SET_PREFIX if direction == "ingress" else names.DEST_SET_PREFIX
    return names.policy_set(family, prefix, namespace, name, direction, str(index))


def _rule_lines(policy: Policy, direction: str, rule: Rule, family: int,
                sets: dict[str, IPSet], peer_sets: bool = True) -> list[str]:
    ident = (policy.namespace, policy.name, direction, str(rule.index))
    peer_match = ""
    if rule.peers is not None:
        name = peer_set(policy.namespace, policy.name, direction, rule.index, family)
        if peer_sets:
            _add_set(sets, name, "hash:net", family, peer_entries(rule.peers, family))
        peer_match = f"-m set --match-set {name} {'src' if direction == 'ingress' else 'dst'} "
    if not rule.ports:
        return [f"{peer_match}{_MARK}"]
    lines = []
    for port in rule.ports:
        proto = port.protocol.lower()
        if isinstance(port.port, str):
            lines += _named_port_lines(policy, direction, rule, port, family, sets, ident,
                                       peer_match if direction == "ingress" else "")
            continue
        dport = "" if port.port is None else f"-m {proto} --dport {_port_text(port)} "
        lines.append(f"-p {proto} {peer_match}{dport}{_MARK}")
    return lines


def _named_port_lines(policy: Policy, direction: str, rule: Rule, port: PortMatch, family: int,
                      sets: dict[str, IPSet], ident: tuple[str, ...], peer_match: str) -> list[str]:
    """A named port means a different number on each receiving pod: one set of the
    receivers per number (the policy's targets for ingress, its peer pods for egress)."""
    receivers = policy.targets if direction == "ingress" else rule.peer_pods
    by_number: dict[int, list[str]] = {}
    for pod in receivers:
        number = pod.named_ports.get((port.port, port.protocol))
        if number is not None:
            by_number.setdefault(number, []).extend(_ips(pod, family))
    proto, lines = port.protocol.lower(), []
    for number in sorted(by_number):
        name = names.policy_set(family, names.DEST_SET_PREFIX, *ident, port.protocol,
                                str(port.port), str(number))
        _add_set(sets, name, "hash:ip", family, by_number[number])
        lines.append(f"-p {proto} {peer_match}-m set --match-set {name} dst "
                     f"-m {proto} --dport {number} {_MARK}")
    return lines


def _comment(text: str) -> str:
    return f"-m comment --comment {save_quote(text)} "


def _port_text(port: PortMatch) -> str:
    if port.end_port is not None and port.end_port != port.port:
        return f"{port.port}:{port.end_port}"
    return str(port.port)


def _ips(pod: Pod, family: int) -> list[str]:
    return [ip for ip in pod.ips if (":" in ip) == (family == 6)]


def peer_entries(entries: Iterable[str], family: int) -> list[str]:
    out = []
    for entry in entries:
        if (":" in entry) != (family == 6):
            continue
        # ipset's hash:net cannot hold a /0: the two halves cover the same space.
        out += ([str(half) for half in ipaddress.ip_network(entry).subnets()]
                if entry.endswith("/0") else [entry])
    return out


def _add_set(sets: dict[str, IPSet], name: str, kind: str, family: int,
             entries: Iterable[str]) -> None:
    sets[name] = IPSet(name, kind, SET_FAMILY[family], frozenset(entries))
