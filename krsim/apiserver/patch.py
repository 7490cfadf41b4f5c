"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch, JSON patch (RFC 6902)."""
from __future__ import annotations

import copy

from krsim.apiserver.errors import ApiError, unsupported_media_type

# Strategic merge: lists of objects merged by key instead of replaced (the patchMergeKey tags
# of the Kubernetes types the kinds here use).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "conditions": "type", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
              "ownerReferences": "uid", "podIPs": "ip", "hostIPs": "ip", "addresses": "type",
              "taints": "key", "imagePullSecrets": "name", "tolerations": None}


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target, patch, field: str = ""):
    if isinstance(patch, list):
        return _merge_list(target, patch, MERGE_KEYS.get(field))
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue      # $setElementOrder/... and $retainKeys only order or prune
        if value is None:
            result.pop(key, None)
        else:
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(target, patch: list, key: str | None):
    if not key or not isinstance(target, list) or not all(isinstance(i, dict) for i in patch):
        return [i for i in copy.deepcopy(patch) if not (isinstance(i, dict) and "$patch" in i)]
    result = copy.deepcopy(target)
    for item in patch:
        index = next((n for n, have in enumerate(result)
                      if isinstance(have, dict) and have.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(target, operations: list):
    doc = copy.deepcopy(target)
    for op in operations:
        kind, path = op.get("op"), _pointer(op.get("path", ""))
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error "
                               f"in our request: testing value {op.get('path')} failed")
        elif kind in ("add", "replace"):
            doc = _set(doc, path, copy.deepcopy(op.get("value")), insert=kind == "add")
        elif kind == "remove":
            parent, last = _get(doc, path[:-1]), path[-1]
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                parent = _get(doc, source[:-1])
                del parent[int(source[-1]) if isinstance(parent, list) else source[-1]]
            doc = _set(doc, path, value, insert=True)
        else:
            raise ApiError(422, "Invalid", f"Unexpected kind: {kind}")
    return doc


def _pointer(text: str) -> list[str]:
    if not text:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in text.lstrip("/").split("/")]


def _get(doc, path):
    for part in path:
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError):
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in "
                                           f"our request: path /{'/'.join(path)} not found")
    return doc


def _set(doc, path, value, insert: bool):
    if not path:
        return value
    parent, last = _get(doc, path[:-1]), path[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if insert:
            parent.insert(index, value)
        else:
            parent[index] = value
    else:
        parent[last] = value
    return doc


def apply_patch(content_type: str, target: dict, body) -> dict:
    kind = content_type.split(";")[0].strip()
    if kind == "application/merge-patch+json":
        return merge_patch(target, body)
    if kind == "application/strategic-merge-patch+json":
        return strategic_merge_patch(target, body)
    if kind == "application/json-patch+json":
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "json patch must be a list of operations")
        return json_patch(target, body)
    raise unsupported_media_type(kind)
