"""The resources this server serves: group/version, kind, scope, verbs, short names."""
from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """The name errors use: ``pods``, ``endpointslices.discovery.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, ("ns",), True)
NODES = Resource("", "v1", "nodes", "Node", False, ("no",), True)
PODS = Resource("", "v1", "pods", "Pod", True, ("po",), True)
SERVICES = Resource("", "v1", "services", "Service", True, ("svc",), True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True,
                           ("netpol",))

RESOURCES = (NAMESPACES, NODES, PODS, SERVICES, ENDPOINTSLICES, NETWORKPOLICIES)


def group_versions() -> dict[str, list[str]]:
    """Named API groups (the core group lives under /api) and their versions."""
    groups: dict[str, list[str]] = {}
    for res in RESOURCES:
        if res.group and res.version not in groups.setdefault(res.group, []):
            groups[res.group].append(res.version)
    return groups


def lookup(group: str, version: str, plural: str) -> Resource | None:
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def resources_in(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if (r.group, r.version) == (group, version)]
