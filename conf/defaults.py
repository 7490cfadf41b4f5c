"""Names and defaults of the configuration kube-router-cni writes, in one place.

The file name and the network name are what kube-router's daemon and its
manifests look for: never change them, upgrades depend on them.
"""
from __future__ import annotations

CONF_FILE = "/etc/cni/net.d/10-kuberouter.conflist"
CONF_FILE_ENV = "KUBE_ROUTER_CNI_CONF_FILE"
NETWORK_NAME = "kubernetes"
BRIDGE_NAME = "kube-bridge"
DATA_DIR = "/var/lib/cni/networks"
CNI_BIN_DIR = "/opt/cni/bin"
REFERENCE_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
CNI_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Plugin types per flavour: ours (this project's executables) or the
# containernetworking reference plugins.
PLUGIN_TYPES = {
    "ours": {"bridge": "kube-router-bridge", "ipam": "kube-router-host-local",
             "portmap": "kube-router-portmap"},
    "reference": {"bridge": "bridge", "ipam": "host-local", "portmap": "portmap"},
}
BRIDGE_TYPES = frozenset(t["bridge"] for t in PLUGIN_TYPES.values())
HOST_LOCAL_TYPES = frozenset(t["ipam"] for t in PLUGIN_TYPES.values())
PORTMAP_TYPES = frozenset(t["portmap"] for t in PLUGIN_TYPES.values())

# Executables `install` writes, and the entry point each one runs (the same as
# the console scripts in setup.cfg).
LAUNCHERS = {
    "kube-router-bridge": ("cni.bridge.plugin", "main"),
    "kube-router-host-local": ("cni.host_local.plugin", "main"),
    "kube-router-portmap": ("cni.portmap.plugin", "main"),
}
LOOPBACK = "loopback"
