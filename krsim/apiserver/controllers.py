"""Control-plane work a cluster does around writes, run synchronously inside the server.

- Service ClusterIPs and NodePorts are allocated before a Service is stored
  and released when it is deleted (as the API server's registry does).
- Nodes created without spec.podCIDR(s) get them in a follow-up update (as
  kube-controller-manager --allocate-node-cidrs does).
- EndpointSlices follow Services and Pods (the EndpointSlice controller).
"""
from __future__ import annotations

import ipaddress
from typing import Protocol

from krsim.apiserver import endpointslices as eps
from krsim.apiserver.allocators import CIDRAllocator, IPAllocator, PortAllocator
from krsim.apiserver.defaults import default_service_families
from krsim.apiserver.errors import FieldError
from krsim.apiserver.kinds import ENDPOINTSLICES, NODES, PODS, SERVICES, Resource
from krsim.apiserver.selectors import selector_matches


class AllocationError(Exception):
    def __init__(self, errors: list[FieldError]):
        super().__init__(errors[0].text())
        self.errors = errors


def _family(ip: str) -> str:
    return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"


def _needs_node_ports(spec: dict) -> bool:
    return spec.get("type") == "NodePort" or (spec.get("type") == "LoadBalancer" and
                                              spec.get("allocateLoadBalancerNodePorts", True))


class ServiceAllocator:
    def __init__(self, service_cidrs: list[str], node_ports: tuple[int, int]):
        self.ips = {}
        for cidr in service_cidrs:
            alloc = IPAllocator(cidr)
            self.ips[alloc.family] = alloc
        self.families = list(self.ips)
        self.ports = PortAllocator(*node_ports)

    def ensure_allocated(self, spec: dict, old: dict | None) -> None:
        """Fill spec's clusterIPs/nodePorts; keep what ``old`` had; free what it no longer uses."""
        if old is not None:
            self._carry_over(spec, old)
        taken: list[tuple] = []
        try:
            self._ensure_cluster_ips(spec, old, taken)
            self._ensure_node_ports(spec, old, taken)
        except AllocationError:
            for allocator, value in taken:
                allocator.release(value)
            raise
        if old is not None:
            self.release(old, keep=spec)

    def _carry_over(self, spec: dict, old: dict) -> None:
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key in old and not spec.get(key):
                spec[key] = old[key]
        if _needs_node_ports(spec):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                         for p in old.get("ports") or []}
            for port in spec.get("ports") or []:
                previous = old_ports.get((port.get("port"), port.get("protocol")))
                if previous and not port.get("nodePort"):
                    port["nodePort"] = previous
        else:
            for port in spec.get("ports") or []:
                port.pop("nodePort", None)

    def _ensure_cluster_ips(self, spec: dict, old: dict | None, taken: list) -> None:
        if spec.get("type") == "ExternalName":
            return
        wanted = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if old is not None and (old.get("clusterIPs") or [])[:1] != wanted[:1]:
            raise AllocationError([FieldError("Invalid", "spec.clusterIPs[0]",
                                              "may not change once set", (wanted or [""])[0])])
        if wanted[:1] == ["None"]:
            default_service_families(spec, self.families)
            spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            return
        if wanted and not spec.get("ipFamilies"):
            spec["ipFamilies"] = [_family(ip) for ip in wanted]
        default_service_families(spec, self.families)
        result = []
        for index, family in enumerate(spec["ipFamilies"]):
            if family not in self.ips:
                raise AllocationError([FieldError("Invalid", f"spec.ipFamilies[{index}]",
                                                  "not configured on this cluster", family)])
            allocator = self.ips[family]
            if index < len(wanted):
                ip = wanted[index]
                if old is None or ip not in (old.get("clusterIPs") or []):
                    self._reserve(allocator, ip, f"spec.clusterIPs[{index}]", taken)
            else:
                ip = allocator.allocate()
                taken.append((allocator, ip))
            result.append(ip)
        spec["clusterIP"], spec["clusterIPs"] = result[0], result

    def _ensure_node_ports(self, spec: dict, old: dict | None, taken: list) -> None:
        if not _needs_node_ports(spec):
            return
        held = {p.get("nodePort") for p in (old or {}).get("ports") or []}
        for index, port in enumerate(spec.get("ports") or []):
            if port.get("nodePort"):
                if port["nodePort"] not in held:
                    self._reserve(self.ports, port["nodePort"], f"spec.ports[{index}].nodePort",
                                  taken)
            else:
                port["nodePort"] = self.ports.allocate()
                taken.append((self.ports, port["nodePort"]))
        if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
            if not spec.get("healthCheckNodePort"):
                spec["healthCheckNodePort"] = self.ports.allocate()
                taken.append((self.ports, spec["healthCheckNodePort"]))

    @staticmethod
    def _reserve(allocator, value, field: str, taken: list) -> None:
        try:
            allocator.reserve(value)
        except (ValueError, Exception) as err:
            raise AllocationError([FieldError("Invalid", field, str(err), value)]) from None
        taken.append((allocator, value))

    def release(self, spec: dict, keep: dict | None = None) -> None:
        keep = keep or {}
        kept_ips = set(keep.get("clusterIPs") or [])
        for ip in spec.get("clusterIPs") or []:
            if ip != "None" and ip not in kept_ips:
                self.ips[_family(ip)].release(ip)
        kept_ports = {p.get("nodePort") for p in keep.get("ports") or []}
        kept_ports.add(keep.get("healthCheckNodePort"))
        for port in [p.get("nodePort") for p in spec.get("ports") or []] + \
                [spec.get("healthCheckNodePort")]:
            if port and port not in kept_ports:
                self.ports.release(port)


class Writer(Protocol):
    def objects(self, res: Resource, namespace: str | None) -> list[dict]: ...
    def write_internal(self, res: Resource, obj: dict) -> dict: ...
    def delete_internal(self, res: Resource, namespace: str, name: str) -> None: ...


class Controllers:
    """Reacts to stored changes by writing the objects other controllers would write."""

    def __init__(self, cluster_cidrs: list[str], node_cidr_masks: dict[int, int]):
        self.cidrs = [CIDRAllocator(c, node_cidr_masks.get(ipaddress.ip_network(c).version))
                      for c in cluster_cidrs]

    def after_write(self, api: Writer, res: Resource, old: dict | None, new: dict | None) -> None:
        if res is NODES:
            self._sync_node(api, old, new)
        elif res is SERVICES:
            obj = new or old
            self.sync_service_slices(api, obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif res is PODS:
            self._sync_pod(api, old, new)

    def _sync_node(self, api: Writer, old: dict | None, new: dict | None) -> None:
        if new is None:
            for cidr in (old.get("spec") or {}).get("podCIDRs") or []:
                for alloc in self.cidrs:
                    alloc.release(cidr)
            return
        spec = new.get("spec") or {}
        if old is None and spec.get("podCIDRs"):
            for cidr in spec["podCIDRs"]:
                for alloc in self.cidrs:
                    alloc.reserve(cidr)
        if spec.get("podCIDRs") or spec.get("podCIDR") or not self.cidrs:
            return
        cidrs = [alloc.allocate() for alloc in self.cidrs]
        updated = {**new, "spec": {**spec, "podCIDR": cidrs[0], "podCIDRs": cidrs}}
        api.write_internal(NODES, updated)

    def _sync_pod(self, api: Writer, old: dict | None, new: dict | None) -> None:
        obj = new or old
        namespace = obj["metadata"]["namespace"]
        labels = [(o["metadata"].get("labels") or {}) for o in (old, new) if o]
        for service in api.objects(SERVICES, namespace):
            selector = (service.get("spec") or {}).get("selector")
            if any(selector_matches(selector, lbl) for lbl in labels):
                self.sync_service_slices(api, namespace, service["metadata"]["name"])

    def sync_service_slices(self, api: Writer, namespace: str, name: str) -> None:
        services = [s for s in api.objects(SERVICES, namespace) if s["metadata"]["name"] == name]
        existing = eps.slices_of(name, api.objects(ENDPOINTSLICES, namespace))
        desired = []
        if services and (services[0].get("spec") or {}).get("selector"):
            desired = eps.build_endpoint_slices(services[0], api.objects(PODS, namespace))
        current = {s["metadata"]["name"]: s for s in existing}
        for want in desired:
            have = current.pop(want["metadata"]["name"], None)
            if have is None or not eps.same_content(have, want):
                if have is not None:
                    want["metadata"] = {**have["metadata"], **want["metadata"]}
                api.write_internal(ENDPOINTSLICES, want)
        for stale in sorted(current):
            api.delete_internal(ENDPOINTSLICES, namespace, stale)
