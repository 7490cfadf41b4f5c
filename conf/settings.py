"""Flags, environment, Node object and auto-detection -> one effective setting each,
remembering where every value came from (for `show`)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from conf import node
from conf.build import ConfOptions
from conf.cidr import parse_pod_cidrs
from conf.errors import ConfError
from conf.host import Host, auto_mtu

# How a flag's value was given: "flag", "env NAME" or "default".
Origin = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class Setting:
    value: Any
    source: str


def under_root(root: str | None, path: str) -> str:
    """``path`` inside ``root`` (the node's filesystem mounted somewhere else)."""
    if not root:
        return path
    return os.path.join(root, path.lstrip("/"))


def resolve_pod_cidrs(params: Mapping, origin: Origin, host: Host) -> Setting:
    if params.get("pod_cidr"):
        given = [c for arg in params["pod_cidr"] for c in arg.split(",") if c.strip()]
        cidrs, source = given, origin("pod_cidr")
    else:
        api = node.api_source(params.get("kubeconfig"), params.get("master"), host.environ)
        if api is None:
            raise ConfError("no pod CIDR: pass --pod-cidr, or --kubeconfig/--master (or run "
                            "in the cluster) to read it from this node's Node object")
        if params.get("node_name"):
            name = params["node_name"]
        else:
            name, _ = node.default_node_name(host.environ, host.hostname)
        cidrs, source = node.node_pod_cidrs(api, name)
    try:
        return Setting(tuple(parse_pod_cidrs(cidrs)), source)
    except ValueError as exc:
        raise ConfError(f"{exc} (from {source})") from None


def resolve_mtu(params: Mapping, origin: Origin, host: Host) -> Setting:
    if params.get("mtu") is not None:
        return Setting(params["mtu"], origin("mtu"))
    if params.get("auto_mtu", True):
        return Setting(*auto_mtu(host))
    return Setting(None, "unset: --no-auto-mtu, the plugin's default applies")


LAYOUT_FIELDS = {
    # ConfOptions field -> click parameter name
    "cni_version": "cni_version",
    "network_name": "network_name",
    "bridge": "bridge_name",
    "hairpin": "hairpin",
    "host_port": "host_port",
    "ip_masq": "ip_masq",
    "data_dir": "data_dir",
    "plugins": "plugins",
}


def resolve_options(params: Mapping, origin: Origin, host: Host) -> dict[str, Setting]:
    """Every ConfOptions field as a Setting, in the order ``show`` prints them."""
    settings = {"pod_cidrs": resolve_pod_cidrs(params, origin, host),
                "mtu": resolve_mtu(params, origin, host)}
    for field, param in LAYOUT_FIELDS.items():
        settings[field] = Setting(params[param], origin(param))
    return settings


def conf_options(settings: Mapping[str, Setting]) -> ConfOptions:
    return ConfOptions(**{k: v.value for k, v in settings.items()})
