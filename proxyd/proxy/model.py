"""Services + EndpointSlices -> what the node must forward, as plain data (pure).

One ``ServicePort`` per port of a Service: its frontends (ClusterIPs,
external IPs, LoadBalancer ingress IPs, the NodePort) and its endpoints
(from the Service's EndpointSlices, matched by port name). kube-router's
rules, as the proxy applies them:
  * endpoints are used when ready (serving-but-terminating ones only when no
    endpoint is ready, as kube-proxy does);
  * internalTrafficPolicy=Local limits ClusterIP traffic to this node's
    endpoints, externalTrafficPolicy=Local does the same for NodePorts,
    external and LoadBalancer IPs;
  * sessionAffinity=ClientIP pins a client for timeoutSeconds (10800);
  * the ``kube-router.io/service.scheduler`` annotation picks the IPVS
    scheduler (rr by default), ``kube-router.io/service.hairpin`` turns on
    hairpin SNAT for the service (as --hairpin-mode does for all);
  * Services without a ClusterIP (headless) or of type ExternalName are not proxied.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lowlevel.apiobjects import (cluster_ips, endpoint_conditions, external_ips, loadbalancer_ips,
                                 service_of_slice)

SCHEDULER_ANNOTATION = "kube-router.io/service.scheduler"
HAIRPIN_ANNOTATION = "kube-router.io/service.hairpin"
SCHEDULERS = {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"}
DEFAULT_AFFINITY = 10800


class ServiceError(ValueError):
    """A Service the proxy cannot program; the message names it."""


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    node: str
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True)
class ServicePort:
    service: str                      # "ns/name"
    name: str                         # the port's name ("" when unnamed)
    protocol: str
    port: int
    cluster_ips: tuple[str, ...]
    external_ips: tuple[str, ...]     # spec.externalIPs and LoadBalancer ingress IPs
    node_port: int | None
    endpoints: tuple[Endpoint, ...]
    scheduler: str = "rr"
    affinity_seconds: int = 0
    local_internal: bool = False      # internalTrafficPolicy=Local
    local_external: bool = False      # externalTrafficPolicy=Local
    hairpin: bool = False

    def usable(self, node: str, external: bool) -> tuple[Endpoint, ...]:
        """The endpoints traffic may go to, for internal (ClusterIP) or external frontends."""
        eps = self.endpoints
        if self.local_external if external else self.local_internal:
            eps = tuple(e for e in eps if e.node == node)
        ready = tuple(e for e in eps if e.ready)
        return ready or tuple(e for e in eps if e.serving and e.terminating)


@dataclass
class ProxyModel:
    ports: list[ServicePort] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_model(services: Iterable[Mapping], slices: Iterable[Mapping],
                hairpin_all: bool = False) -> ProxyModel:
    by_service: dict[str, list[Mapping]] = {}
    for s in slices:
        owner = service_of_slice(s)
        if owner:
            by_service.setdefault(owner, []).append(s)
    model = ProxyModel()
    for svc in sorted(services, key=_key):
        try:
            model.ports += service_ports(svc, by_service.get(_key(svc), []), hairpin_all)
        except (ServiceError, ValueError, TypeError, KeyError) as e:
            model.problems.append(f"Service {_key(svc)}: {e}")
    return model


def _key(obj: Mapping) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def service_ports(svc: Mapping, slices: list[Mapping], hairpin_all: bool) -> list[ServicePort]:
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return []
    vips = cluster_ips(svc)
    if not vips:
        return []                                       # headless: DNS only
    for ip in vips:
        ipaddress.ip_address(ip)
    annotations = meta.get("annotations") or {}
    scheduler = (annotations.get(SCHEDULER_ANNOTATION) or "rr").strip()
    if scheduler not in SCHEDULERS:
        raise ServiceError(f"{SCHEDULER_ANNOTATION}={scheduler!r} is not an IPVS scheduler "
                           f"({', '.join(sorted(SCHEDULERS))})")
    external = external_ips(svc) + loadbalancer_ips(svc)
    for ip in external:
        ipaddress.ip_address(ip)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        affinity = int(((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
                       .get("timeoutSeconds") or DEFAULT_AFFINITY)
    hairpin = hairpin_all or HAIRPIN_ANNOTATION in annotations
    out = []
    for port in spec.get("ports") or ():
        name, protocol = port.get("name") or "", (port.get("protocol") or "TCP").upper()
        node_port = port.get("nodePort") if spec.get("type") in ("NodePort", "LoadBalancer") else None
        out.append(ServicePort(
            _key(svc), name, protocol, int(port["port"]), vips, external,
            int(node_port) if node_port else None, _endpoints(slices, name, protocol),
            scheduler, affinity, spec.get("internalTrafficPolicy") == "Local",
            spec.get("externalTrafficPolicy") == "Local", hairpin))
    return out


def _endpoints(slices: list[Mapping], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    found: dict[tuple[str, int], Endpoint] = {}
    for s in slices:
        number = next((p.get("port") for p in s.get("ports") or ()
                       if (p.get("name") or "") == port_name
                       and (p.get("protocol") or "TCP").upper() == protocol), None)
        if number is None:
            continue
        for ep in s.get("endpoints") or ():
            ready, serving, terminating = endpoint_conditions(ep)
            for address in ep.get("addresses") or ():
                found[(address, int(number))] = Endpoint(
                    address, int(number), ep.get("nodeName") or "", ready, serving, terminating)
    return tuple(found[k] for k in sorted(found))
