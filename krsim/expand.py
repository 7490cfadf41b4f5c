"""Probe specs + what the cluster looks like now -> concrete probes (pure).

``ClusterView`` is a snapshot of names to addresses (pods from the API server's
pod status, services' ClusterIPs and NodePorts, nodes' underlay addresses and
the namespaces to probe from); ``expand_probes`` turns a step's probe specs, or
the full pod matrix when a step has none, into ``probe.Probe`` objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from krsim.probe import Probe
from krsim.scenario import Endpoint, ProbeSpec, ScenarioError, Step


@dataclass(frozen=True)
class PodView:
    key: str
    node: str
    ips: tuple
    ports: tuple                # ((containerPort, protocol), ...)
    netns: str                  # /run/netns/... of the pod


@dataclass(frozen=True)
class NodeView:
    name: str
    address: str
    netns: str


@dataclass(frozen=True)
class ServiceView:
    key: str
    cluster_ip: str | None
    ports: tuple                # ((port, protocol, nodePort or None), ...)


@dataclass(frozen=True)
class ClusterView:
    pods: dict = field(default_factory=dict)        # "ns/name" -> PodView
    nodes: dict = field(default_factory=dict)       # name -> NodeView
    services: dict = field(default_factory=dict)    # "ns/name" -> ServiceView


def _source(view: ClusterView, end: Endpoint, path: str) -> tuple[str, str]:
    if end.kind == "node":
        return end.label, view.nodes[end.parts[0]].netns
    pod = view.pods.get(end.label)
    if pod is None:
        raise ScenarioError(f"{path}.from: pod {end.label} does not exist (or is not running)")
    return end.label, pod.netns


def _targets(view: ClusterView, spec: ProbeSpec) -> list[tuple[str, int, str]]:
    """(address, port, protocol) for every port the spec means."""
    end, path = spec.target, f"{spec.path}.to"
    if end.kind == "pod":
        pod = view.pods.get(end.label)
        if pod is None or not pod.ips:
            raise ScenarioError(f"{path}: pod {end.label} does not exist (or has no IP)")
        return [(pod.ips[0], port, proto) for port, proto in pod.ports] \
            if spec.port is None else [(pod.ips[0], spec.port, spec.protocol)]
    if end.kind == "svc":
        svc = view.services.get(f"{end.parts[0]}/{end.parts[1]}")
        if svc is None or not svc.cluster_ip or svc.cluster_ip == "None":
            raise ScenarioError(f"{path}: service {end.parts[0]}/{end.parts[1]} does not exist "
                                "or has no ClusterIP")
        if spec.port is None:
            return [(svc.cluster_ip, port, proto) for port, proto, _ in svc.ports]
        return [(svc.cluster_ip, spec.port, spec.protocol)]
    if end.kind == "nodeport":
        return [(view.nodes[end.parts[0]].address, end.parts[1], spec.protocol)]
    if end.kind == "node":
        return [(view.nodes[end.parts[0]].address, spec.port, spec.protocol)]
    return [(end.parts[0], spec.port, spec.protocol)]


def expand_spec(view: ClusterView, spec: ProbeSpec) -> list[Probe]:
    source, netns = _source(view, spec.source, spec.path)
    out = []
    for address, port, protocol in _targets(view, spec):
        if spec.protocol and protocol != spec.protocol:
            continue
        out.append(Probe(source, netns, spec.target.label, address, port, protocol,
                         expect=spec.expect, count=spec.count))
    return out


def pod_matrix(view: ClusterView, expect: str | None) -> list[Probe]:
    """Every pod to every pod on every port the destination declares."""
    probes = []
    for src in sorted(view.pods):
        for dst in sorted(view.pods):
            pod = view.pods[dst]
            for port, protocol in pod.ports:
                probes.append(Probe(src, view.pods[src].netns, dst, pod.ips[0], port, protocol,
                                    expect=expect))
    return probes


def expand_probes(view: ClusterView, step: Step) -> list[Probe]:
    if step.probes is None:
        return pod_matrix(view, step.expect)
    return [p for spec in step.probes for p in expand_spec(view, spec)]
