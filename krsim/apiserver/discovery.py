"""Discovery documents: /api, /apis, APIGroup, APIResourceList, /version, /openapi/v2."""
from __future__ import annotations

from krsim.apiserver.kinds import ALL_VERBS, group_versions, resources_in

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-kube-router-sim",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22.0", "compiler": "gc",
           "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(name, versions) for name, versions in group_versions().items()]}


def api_group(name: str) -> dict | None:
    versions = group_versions().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_resource_list(group: str, version: str) -> dict | None:
    found = resources_in(group, version)
    if not found:
        return None
    resources = []
    for res in found:
        entry = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                 "kind": res.kind, "verbs": list(ALL_VERBS)}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        resources.append(entry)
        if res.has_status:
            resources.append({"name": f"{res.plural}/status", "singularName": "",
                              "namespaced": res.namespaced, "kind": res.kind,
                              "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


# kubectl fetches /openapi/v2 as protobuf (a gnostic openapi_v2.Document) before validating
# create/apply. This is that message with only `swagger: "2.0"` and an `info` set: it holds no
# schemas, so kubectl finds none for a kind and skips client-side validation (the server
# still validates). Field 1 = swagger, field 2 = info {title (1), version (3)}.
def _pb_string(field: int, text: str) -> bytes:
    data = text.encode()
    return bytes([field << 3 | 2, len(data)]) + data


OPENAPI_V2_PROTOBUF = _pb_string(1, "2.0") + bytes([2 << 3 | 2]) + bytes(
    [len(_pb_string(1, "Kubernetes") + _pb_string(3, VERSION["gitVersion"]))]) + \
    _pb_string(1, "Kubernetes") + _pb_string(3, VERSION["gitVersion"])
OPENAPI_V2_JSON = {"swagger": "2.0", "info": {"title": "Kubernetes",
                                              "version": VERSION["gitVersion"]},
                   "paths": {}, "definitions": {}}
