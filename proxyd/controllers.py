"""The controllers kube-router can run: one row each, the one place that names them.

config.py reads which run-* flag enables what and what this build has,
daemon.py builds the enabled ones, cleanup.py runs every row's cleanup, and
the packaging tests check that the Makefile and the image install every
executable a row says its controller runs. Factories and cleanups are named
as "module:attribute" and imported only when used: reading the flags must not
import pyroute2 or the kubernetes client.
"""
from __future__ import annotations

import dataclasses
import importlib

# never change: the keys are the names in /statusz, /metrics and the logs
FIREWALL, ROUTER, PROXY, LOADBALANCER = "firewall", "router", "service-proxy", "loadbalancer"
LOCALNET_GUARD = "localnet-guard"

XTABLES = ("iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore", "ipset")


@dataclasses.dataclass(frozen=True)
class ControllerRow:
    key: str
    title: str
    flag: str = ""                 # the run-* flag that enables it; "": runs beside any other
    factory: str = ""              # "module:callable" taking (config, node_name); "": not built
    cleanup: str = ""              # "module:callable" taking (config), returning what it removed
    execs: tuple[str, ...] = ()    # every executable it may run
    # What kube-router's controller has and this build does not, refused by name: flags
    # ("--name", refused when set to anything but the default) and annotations (logged on
    # the object that carries one, which is served without it), each with the reason.
    unbuilt: tuple[tuple[str, str], ...] = ()

    @property
    def built(self) -> bool:
        return bool(self.factory)

    def build(self, config, node_name: str):
        return _load(self.factory)(config, node_name)

    def clean(self, config) -> list[str]:
        return _load(self.cleanup)(config)

    def unbuilt_flags(self) -> dict[str, str]:
        return {name[2:]: why for name, why in self.unbuilt if name.startswith("--")}

    def refused_annotations(self, obj, kind: str) -> list[str]:
        """One line per annotation this build does not act on that ``obj`` (a ``kind``:
        "node", "Service") carries."""
        meta = obj.get("metadata") or {}
        have = meta.get("annotations") or {}
        key = "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p)
        return [f"{kind} {key}: annotation {name} is not implemented in this build "
                f"(ignored: {why})" for name, why in self.unbuilt
                if not name.startswith("--") and name in have]


def _load(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


REGISTRY: tuple[ControllerRow, ...] = (
    ControllerRow(FIREWALL, "network policy firewall", "run-firewall",
                  "proxyd.netpol.controller:NetworkPolicyController",
                  "proxyd.netpol.controller:cleanup_firewall", XTABLES + ("modprobe",)),
    ControllerRow(ROUTER, "BGP pod routing", "run-router",
                  "proxyd.routing.controller:RoutingController",
                  "proxyd.routing.controller:cleanup_routing", XTABLES + ("gobgpd",), (
                      ("--override-nexthop", "next-hop rewriting for route reflectors"),
                      ("kube-router.io/rr.server", "route reflectors"),
                      ("kube-router.io/rr.client", "route reflectors"),
                      ("kube-router.io/bgp-local-addresses", "BGP local addresses"),
                      ("kube-router.io/path-prepend.as", "AS path prepending"),
                      ("kube-router.io/path-prepend.repeat-n", "AS path prepending"),
                      ("kube-router.io/node.bgp.communities", "BGP communities"),
                      ("kube-router.io/node.bgp.customimportreject", "BGP import policy"))),
    ControllerRow(PROXY, "IPVS service proxy", "run-service-proxy",
                  "proxyd.proxy.controller:ServiceProxyController",
                  "proxyd.proxy.controller:cleanup_proxy", XTABLES + ("ipvsadm", "modprobe"), (
                      ("--runtime-endpoint", "DSR"),
                      ("kube-router.io/service.dsr", "DSR; the Service is proxied by NAT"),
                      ("kube-router.io/service.schedflags", "IPVS scheduler flags"),
                      ("kube-router.io/service.local",
                       "the per-Service local-only policy; use the traffic policies"),
                      ("kube-router.io/service.skiplbips",
                       "skipping LoadBalancer IPs; they are proxied"),
                      ("kube-router.io/service.hairpin.externalips",
                       "hairpin for external IPs only; service.hairpin covers every address"))),
    ControllerRow(LOADBALANCER, "LoadBalancer IP allocator", "run-loadbalancer"),
    ControllerRow(LOCALNET_GUARD, "localnet guard", "",
                  "proxyd.kernel.localnet:LocalnetGuard",
                  "proxyd.kernel.localnet:cleanup_localnet_guard",
                  ("iptables-save", "iptables-restore")),
)
BY_KEY = {row.key: row for row in REGISTRY}
# The controllers an operator switches on and off, by their run-* flag.
SWITCHED = tuple(row for row in REGISTRY if row.flag)


def build_enabled(config, node_name: str) -> list:
    """The controllers the flags enable (check_features has refused unbuilt ones), and the
    ones that run beside any of them."""
    enabled = [row.build(config, node_name) for row in SWITCHED
               if row.built and getattr(config, row.flag.replace("-", "_"))]
    if enabled:
        enabled += [row.build(config, node_name) for row in REGISTRY if not row.flag]
    return enabled
