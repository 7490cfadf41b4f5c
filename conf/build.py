"""The conflist as plain data: options in, dict out. No I/O."""
from __future__ import annotations

import dataclasses
import ipaddress
import json

from conf import defaults


@dataclasses.dataclass(frozen=True)
class ConfOptions:
    pod_cidrs: tuple[str, ...]
    cni_version: str = defaults.CNI_VERSION
    network_name: str = defaults.NETWORK_NAME
    bridge: str = defaults.BRIDGE_NAME
    mtu: int | None = None
    hairpin: bool = True
    host_port: bool = True
    ip_masq: bool = False
    data_dir: str = defaults.DATA_DIR
    plugins: str = "ours"


def default_route(cidr: str) -> dict:
    version = ipaddress.ip_network(cidr).version
    return {"dst": "0.0.0.0/0" if version == 4 else "::/0"}


def build_ipam(opts: ConfOptions) -> dict:
    # No "routes": the bridge's isDefaultGateway installs the default route of every
    # family itself. A default route in IPAM as well makes the bridge plugin add it
    # twice and fail every ADD with "file exists" (measured with plugins 1.1.1).
    return {
        "type": defaults.PLUGIN_TYPES[opts.plugins]["ipam"],
        "ranges": [[{"subnet": cidr}] for cidr in opts.pod_cidrs],
        "dataDir": opts.data_dir,
    }


def build_bridge(opts: ConfOptions) -> dict:
    plugin = {
        "type": defaults.PLUGIN_TYPES[opts.plugins]["bridge"],
        "bridge": opts.bridge,
        "isDefaultGateway": True,
        "hairpinMode": opts.hairpin,
        "ipMasq": opts.ip_masq,
    }
    if opts.mtu is not None:
        plugin["mtu"] = opts.mtu
    plugin["ipam"] = build_ipam(opts)
    return plugin


def build_portmap(opts: ConfOptions) -> dict:
    return {
        "type": defaults.PLUGIN_TYPES[opts.plugins]["portmap"],
        "capabilities": {"portMappings": True},
        "snat": True,
    }


def build_conflist(opts: ConfOptions) -> dict:
    plugins = [build_bridge(opts)]
    if opts.host_port:
        plugins.append(build_portmap(opts))
    return {"cniVersion": opts.cni_version, "name": opts.network_name, "plugins": plugins}


def render(doc: dict) -> str:
    """The file's text: 2-space indent, keys in the order built, trailing newline."""
    return json.dumps(doc, indent=2) + "\n"
