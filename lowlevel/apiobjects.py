"""Facts about Kubernetes API objects, read from their JSON form (plain dicts), each in one place.

kube-router-cni, the service proxy, the router and the firewall all read
Nodes, Services and EndpointSlices; what a field means is decided here once.
Standard library only (conf/ and the daemon both import it).
"""
from __future__ import annotations

import ipaddress
from typing import Mapping

# never change: the API's and kube-router's names
SERVICE_NAME_LABEL = "kubernetes.io/service-name"       # an EndpointSlice's Service
POD_CIDRS_ANNOTATION = "kube-router.io/pod-cidrs"       # comma separated, dual-stack
POD_CIDR_ANNOTATION = "kube-router.io/pod-cidr"         # kube-router's older, single one
ADDRESS_TYPES = ("InternalIP", "ExternalIP")            # a node's address: the first found


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def node_addresses(node: Mapping) -> dict[int, str]:
    """A node's address per IP family (4, 6): its InternalIP, else its ExternalIP."""
    found: dict[int, str] = {}
    addresses = (node.get("status") or {}).get("addresses") or []
    for kind in ADDRESS_TYPES:
        for entry in addresses:
            if entry.get("type") == kind and entry.get("address"):
                version = ipaddress.ip_address(entry["address"]).version
                found.setdefault(version, entry["address"])
    return found


def pod_cidrs(node: Mapping) -> tuple[tuple[str, ...], str]:
    """(A node's pod CIDRs, the field they came from); ((), "") when it has none.

    The first of: the kube-router.io/pod-cidrs annotation, kube-router.io/pod-cidr,
    spec.podCIDRs, spec.podCIDR. (kube-router reads its two annotations in two
    places: the single one before spec.podCIDR, the plural one before
    spec.podCIDRs; here an annotation, when a node has one, always wins.)
    """
    annotations = _meta(node).get("annotations") or {}
    spec = node.get("spec") or {}
    many = tuple(c.strip() for c in (annotations.get(POD_CIDRS_ANNOTATION) or "").split(",")
                 if c.strip())
    if many:
        return many, f"annotation {POD_CIDRS_ANNOTATION}"
    one = (annotations.get(POD_CIDR_ANNOTATION) or "").strip()
    if one:
        return (one,), f"annotation {POD_CIDR_ANNOTATION}"
    if spec.get("podCIDRs"):
        return tuple(spec["podCIDRs"]), "node object spec.podCIDRs"
    if spec.get("podCIDR"):
        return (spec["podCIDR"],), "node object spec.podCIDR"
    return (), ""


def cluster_ips(service: Mapping) -> tuple[str, ...]:
    """spec.clusterIPs (else spec.clusterIP); none for a headless Service ("None")."""
    spec = service.get("spec") or {}
    return tuple(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")])
                 if ip and ip != "None")


def external_ips(service: Mapping) -> tuple[str, ...]:
    return tuple((service.get("spec") or {}).get("externalIPs") or ())


def loadbalancer_ips(service: Mapping) -> tuple[str, ...]:
    """status.loadBalancer.ingress[].ip (a hostname-only ingress has none)."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    return tuple(i["ip"] for i in ingress if i.get("ip"))


def service_of_slice(endpoint_slice: Mapping) -> str | None:
    """"namespace/name" of the Service an EndpointSlice belongs to; None if unlabelled."""
    meta = _meta(endpoint_slice)
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace')}/{name}" if name else None


def endpoint_conditions(endpoint: Mapping) -> tuple[bool, bool, bool]:
    """(ready, serving, terminating) of one EndpointSlice endpoint, with the API's
    defaults: an unset ready means ready, an unset serving means what ready says."""
    cond = endpoint.get("conditions") or {}
    ready = cond.get("ready") is not False
    return ready, cond.get("serving", ready) is not False, bool(cond.get("terminating"))


def has_ready_endpoint_on(endpoint_slice: Mapping, node_name: str) -> bool:
    return any(ep.get("nodeName") == node_name and endpoint_conditions(ep)[0]
               for ep in endpoint_slice.get("endpoints") or ())
