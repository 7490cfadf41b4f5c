"""The EndpointSlice controller: Services + Pods -> EndpointSlices (desired state as plain data).

As kube-controller-manager's: one slice per Service per address family (more
when pods resolve a named targetPort differently), labelled
kubernetes.io/service-name and managed-by endpointslice-controller.k8s.io.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json

from krsim.apiserver.selectors import selector_matches

MANAGED_BY = "endpointslice-controller.k8s.io"
LABEL_SERVICE = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def pod_is_ready(pod: dict) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_ips(pod: dict) -> list[str]:
    status = pod.get("status") or {}
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


def family_of(ip: str) -> str:
    return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"


def resolve_target_port(service_port: dict, pod: dict) -> int | None:
    """A Service port's targetPort for one pod: a number, or a container port found by name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return port.get("containerPort")
    return None


def endpoint_ports(service: dict, pod: dict) -> tuple[tuple[str, int, str], ...]:
    ports = []
    for sp in service["spec"].get("ports") or []:
        number = resolve_target_port(sp, pod)
        if number is not None:
            ports.append((sp.get("name", ""), number, sp.get("protocol", "TCP")))
    return tuple(ports)


def build_endpoint(pod: dict, ip: str, publish_not_ready: bool) -> dict:
    meta = pod["metadata"]
    terminating = bool(meta.get("deletionTimestamp"))
    ready = pod_is_ready(pod)
    endpoint = {
        "addresses": [ip],
        "conditions": {"ready": (ready or publish_not_ready) and not terminating,
                       "serving": ready or publish_not_ready, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                      "uid": meta.get("uid", "")},
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    return endpoint


def slice_name(service_name: str, family: str, ports: tuple) -> str:
    digest = hashlib.sha256(json.dumps([family, ports]).encode()).hexdigest()[:5]
    return f"{service_name[:57]}-{digest}"


def build_endpoint_slices(service: dict, pods: list[dict]) -> list[dict]:
    """The slices a Service with a selector should have, sorted by name."""
    spec = service.get("spec") or {}
    meta = service["metadata"]
    families = spec.get("ipFamilies") or ["IPv4"]
    publish = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple[str, tuple], list[dict]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if not selector_matches(spec.get("selector"), pod["metadata"].get("labels") or {}):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        ports = endpoint_ports(service, pod)
        for ip in pod_ips(pod):
            family = family_of(ip)
            if family in families:
                groups.setdefault((family, ports), []).append(build_endpoint(pod, ip, publish))
    if not groups:
        # The real controller keeps an empty placeholder slice for a Service with no endpoints.
        groups[(families[0], ())] = []
    return [_slice(service, family, ports, endpoints)
            for (family, ports), endpoints in sorted(groups.items())]


def _slice(service: dict, family: str, ports: tuple, endpoints: list[dict]) -> dict:
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(meta["name"], family, ports),
            "namespace": meta["namespace"],
            "labels": {LABEL_SERVICE: meta["name"], LABEL_MANAGED_BY: MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                 "uid": meta.get("uid", ""), "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": name, "port": port, "protocol": proto} for name, port, proto in ports],
    }


def same_content(a: dict, b: dict) -> bool:
    keys = ("addressType", "endpoints", "ports")
    return (all(a.get(k) == b.get(k) for k in keys)
            and a["metadata"].get("labels") == b["metadata"].get("labels")
            and a["metadata"].get("ownerReferences") == b["metadata"].get("ownerReferences"))


def is_managed(slice_obj: dict) -> bool:
    return (slice_obj["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY


def slices_of(service_name: str, slices: list[dict]) -> list[dict]:
    return [s for s in slices if is_managed(s)
            and (s["metadata"].get("labels") or {}).get(LABEL_SERVICE) == service_name]
