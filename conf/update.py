"""update: what kube-router's daemon does to an existing configuration at start.

Pure ``update_conflist`` (the daemon calls it too) plus ``update_file`` around it.
Unknown fields and key order are kept; only what must change changes.
"""
from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import os

from conf import defaults, fileio
from conf.build import default_route, render
from conf.errors import ConfError
from conf.semantics import LEGACY_KEYS, plugins_of


def _bridge_plugin(doc: dict) -> dict:
    for _, plugin in plugins_of(doc):
        if plugin.get("type") in defaults.BRIDGE_TYPES:
            return plugin
    types = ", ".join(repr(p.get("type")) for _, p in plugins_of(doc))
    raise ConfError(f"no bridge plugin to update (plugin types: {types or 'none'}): "
                    f"expected one of {', '.join(sorted(defaults.BRIDGE_TYPES))}")


def _replace_key(d: dict, old: str, new: str, value) -> dict:
    """``d`` with ``old`` replaced by ``new: value`` at the same position."""
    return {(new if k == old else k): (value if k == old else v) for k, v in d.items()}


def migrate_legacy_subnet(ipam: dict) -> dict:
    """host-local's pre-0.3 ``subnet``/``rangeStart``/… -> a first range set in ``ranges``."""
    if "subnet" not in ipam:
        return ipam
    legacy = {k: ipam[k] for k in LEGACY_KEYS if k in ipam}
    # host-local puts the legacy range before the others; so does the migration.
    ranges = [[legacy]] + list(ipam.get("ranges", []))
    anchor = "ranges" if "ranges" in ipam else "subnet"
    kept = {k: v for k, v in ipam.items() if k == anchor or k not in LEGACY_KEYS}
    return _replace_key(kept, anchor, "ranges", ranges)


def _subnets(ranges: list) -> list:
    nets = []
    for rset in ranges:
        for rng in rset:
            try:
                nets.append(ipaddress.ip_network(rng.get("subnet"), strict=False))
            except (TypeError, ValueError):
                continue
    return nets


def ensure_pod_cidrs(ipam: dict, pod_cidrs, default_routes: bool) -> dict:
    """Append a range set for each pod CIDR no range covers yet, and (``default_routes``)
    its family's default route when the ipam already lists routes."""
    ranges = list(ipam.get("ranges", []))
    present = _subnets(ranges)
    for text in pod_cidrs:
        net = ipaddress.ip_network(text)
        if net not in present:
            ranges.append([{"subnet": str(net)}])
            present.append(net)
    out = dict(ipam)
    out["ranges"] = ranges
    if default_routes and isinstance(out.get("routes"), list):
        routes = list(out["routes"])
        for text in pod_cidrs:
            route = default_route(text)
            if not any(r.get("dst") == route["dst"] for r in routes if isinstance(r, dict)):
                routes.append(route)
        out["routes"] = routes
    return out


def update_conflist(doc: dict, pod_cidrs, mtu: int | None = None) -> dict:
    """``doc`` (a .conflist or single .conf) with the pod CIDRs and MTU in its bridge plugin.

    Returns a new dict; ``doc`` is not modified.
    """
    doc = copy.deepcopy(doc)
    bridge = _bridge_plugin(doc)
    ipam = bridge.get("ipam")
    if ipam is None:
        ipam = {"type": "host-local"}
    elif not isinstance(ipam, dict):
        raise ConfError("the bridge plugin's ipam is not an object: replace it with "
                        '{"type": "host-local"}')
    # isDefaultGateway installs the default routes; IPAM must not repeat them.
    ipam = ensure_pod_cidrs(migrate_legacy_subnet(ipam), pod_cidrs,
                            default_routes=not bridge.get("isDefaultGateway"))
    bridge["ipam"] = ipam
    if mtu is not None:
        bridge["mtu"] = mtu
    return doc


def to_conflist(doc: dict) -> dict:
    """A single-plugin .conf as a .conflist with that one plugin."""
    if "plugins" in doc:
        return copy.deepcopy(doc)
    plugin = {k: copy.deepcopy(v) for k, v in doc.items() if k not in ("cniVersion", "name")}
    return {"cniVersion": doc.get("cniVersion", defaults.CNI_VERSION),
            "name": doc.get("name", defaults.NETWORK_NAME), "plugins": [plugin]}


def conflist_path(path: str) -> str:
    base, ext = os.path.splitext(path)
    return (base if ext in (".conf", ".json") else path) + ".conflist"


@dataclasses.dataclass(frozen=True)
class UpdateResult:
    path: str
    written: bool
    removed: str | None = None


def same(a: dict, b: dict) -> bool:
    """Equal including key order (dict == ignores order; a reordered file is a change)."""
    return json.dumps(a) == json.dumps(b)


def update_file(path: str, pod_cidrs, mtu: int | None = None, *, to_list: bool = False,
                output: str | None = None, remove_old: bool = False, check=None) -> UpdateResult:
    """Update ``path`` in place, or write it converted to ``output`` (a .conflist).

    ``check(doc)`` may raise ConfError to refuse the result before anything is written.
    """
    doc = fileio.read_json(path)
    if not isinstance(doc, dict):
        raise ConfError(f"{path}: the configuration must be a JSON object", 2)
    new = update_conflist(doc, pod_cidrs, mtu)
    target = path
    if to_list and "plugins" not in new:
        new, target = to_conflist(new), output or conflist_path(path)
    if check is not None:
        check(new)
    if target == path and same(doc, new):
        return UpdateResult(path, False)
    written = fileio.write_atomic(target, render(new).encode())
    removed = None
    if remove_old and target != path:
        os.unlink(path)
        removed = path
    return UpdateResult(target, written, removed)
