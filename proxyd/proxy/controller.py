"""The IPVS service proxy controller (``--run-service-proxy``).

Each sync rebuilds the node's whole desired proxy state from the caches
(model.py: Services + EndpointSlices -> ServicePorts; build.py: -> IPVS
services, VIPs, sets and rules) and hands it to the kernel appliers, in the
order that keeps traffic flowing: VIPs and sets first, then IPVS, then the
rules that reference them, then stale sets.

What is ours in IPVS: virtual services on an address inside the service
CIDRs, the external and LoadBalancer IP ranges, or the node's addresses on a
port in the NodePort range -- minus --excluded-cidrs. Nothing else is
touched, and IPVS is never flushed.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import subprocess

from lowlevel.apiobjects import node_addresses, pod_cidrs
from lowlevel.sysctl import ensure_sysctl
from proxyd import controllers
from proxyd.config import Config
from proxyd.kernel import names
from proxyd.kernel.addresses import local_addresses
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.ipvs import IPVSApplier, ensure_timeouts
from proxyd.kernel.vips import VIPApplier, delete_device
from proxyd.proxy.build import NodeView, ProxyFlags, build_proxy
from proxyd.proxy.model import build_model
from proxyd.problems import ProblemLog
from proxyd.proxy.ownership import IPVSOwnership
from proxyd.runner import MIN_SYNC_INTERVAL
from proxyd.routing.model import NodeError

log = logging.getLogger(__name__)

# IPVS needs conntrack for the SNAT rules to see its connections; a backend that
# is gone must drop its connections at once, as kube-router sets them.
SYSCTLS = {"net/ipv4/vs/conntrack": "1", "net/ipv4/vs/expire_nodest_conn": "1",
           "net/ipv4/vs/expire_quiescent_template": "1",
           # VIPs sit on a dummy interface: never answer ARP for them on the real ones
           "net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}


# Made by the ip_vs module in every network namespace: there exactly when IPVS is.
IPVS_PROC = "/proc/net/ip_vs"


def load_ip_vs(run=subprocess.run) -> str:
    """``modprobe ip_vs``; its complaint, "" when it loaded (or was built in)."""
    try:
        done = run(["modprobe", "ip_vs"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"modprobe ip_vs: {e}"
    if done.returncode == 0:
        return ""
    lines = (done.stderr or "").strip().splitlines()
    return lines[-1] if lines else f"modprobe ip_vs: exit status {done.returncode}"


def ensure_ipvs_module() -> None:
    """IPVS's sysctls exist only once ip_vs is loaded; kube-router loads it too."""
    if not os.path.exists(IPVS_PROC):
        load_ip_vs()


def ipvs_missing(exists=os.path.exists, load=load_ip_vs) -> str | None:
    """None when the kernel has IPVS (loading ip_vs if it is a module); else what to do."""
    if exists(IPVS_PROC):
        return None
    why = load() or f"it loaded, yet there is no {IPVS_PROC}"
    if exists(IPVS_PROC):
        return None
    return (f"the kernel has no IPVS, kernel module ip_vs ({why}): load it with "
            "`modprobe ip_vs` (install the kernel's IPVS modules if it is not found) "
            "or run with --run-service-proxy=false")


class ServiceProxyController:
    name = "service-proxy"
    kinds = ("services", "endpointslices", "nodes")

    def __init__(self, config: Config, node_name: str, *, ipvs: IPVSApplier | None = None,
                 vips: VIPApplier | None = None, ipsets: IPSetApplier | None = None,
                 tables: dict | None = None, sysctl=ensure_sysctl, addresses=local_addresses,
                 ipvs_check=ipvs_missing, load_ipvs=ensure_ipvs_module):
        self.node_name = node_name
        self._ipvs_check, self._load_ipvs = ipvs_check, load_ipvs
        self.families = config.families()
        self.flags = ProxyFlags(self.families, tuple(config.service_cluster_ip_range),
                                config.nodeport_bindon_all_ip, config.masquerade_all,
                                config.ipvs_permit_all)
        self.hairpin_all = config.hairpin_mode
        self.sync_period = config.ipvs_sync_period.total_seconds()
        self.min_sync_interval = min(MIN_SYNC_INTERVAL, self.sync_period)
        self.ownership = IPVSOwnership.from_config(config)
        # With --service-external-ip-range given, an external IP outside it is not served.
        self.external_ranges = tuple(config.service_external_ip_range)
        self.strict_external = config.strict_external_ip_validation and bool(self.external_ranges)
        graceful = config.ipvs_graceful_period.total_seconds() if config.ipvs_graceful_termination \
            else None
        self.ipvs = ipvs or IPVSApplier(lambda *vs: self.ownership.owns(*vs), graceful=graceful)
        self.vips = vips or VIPApplier()
        self.ipsets = ipsets or IPSetApplier(names.is_service_set)
        self.tables = tables or {(f, t): TableApplier(f, t, names.is_service_chain)
                                 for f in self.families for t in ("nat", "filter")}
        self._sysctl, self._addresses = sysctl, addresses
        self.timeouts = tuple(int(t.total_seconds()) for t in (
            config.service_tcp_timeout, config.service_tcpfin_timeout, config.service_udp_timeout))
        self._ensure_timeouts = ensure_timeouts
        self.problems = ProblemLog(log, "service skipped (every other service is still proxied)")
        self.refused = ProblemLog(log, "served without a feature this build lacks")

    def preflight(self) -> str | None:
        """Why this controller cannot run here (no IPVS), or None."""
        return self._ipvs_check()

    def _checked_external(self, sp, problems: list[str]):
        allowed = tuple(ip for ip in sp.external_ips
                        if any(ipaddress.ip_address(ip) in net for net in self.external_ranges
                               if net.version == ipaddress.ip_address(ip).version))
        for ip in sorted(set(sp.external_ips) - set(allowed)):
            problems.append(f"Service {sp.service}: external IP {ip} is outside "
                            "--service-external-ip-range (not served)")
        return dataclasses.replace(sp, external_ips=allowed)

    def sync(self, ctx) -> None:
        nodes = ctx.stores["nodes"]
        me = nodes.get(self.node_name)
        if me is None:
            raise NodeError(f"this node ({self.node_name}) has no Node object yet")
        local = tuple(self._addresses())
        self.ownership = self.ownership.with_addresses(set(local) | set(node_addresses(me).values()))
        view = NodeView(self.node_name, node_addresses(me), local,
                        tuple(c for n in nodes.list() for c in pod_cidrs(n)[0]))
        services = ctx.stores["services"].list()
        unbuilt = controllers.BY_KEY[controllers.PROXY]
        self.refused.report([line for svc in services
                             for line in unbuilt.refused_annotations(svc, "Service")])
        model = build_model(services, ctx.stores["endpointslices"].list(), self.hairpin_all)
        if self.strict_external:
            model.ports = [self._checked_external(sp, model.problems) for sp in model.ports]
        self.problems.report(model.problems)
        desired = build_proxy(model.ports, view, self.flags)
        self._load_ipvs()
        for key, value in SYSCTLS.items():
            self._sysctl(key, value)
        self._ensure_timeouts(*self.timeouts)
        self.vips.sync(desired.vips)
        self.ipsets.sync_sets(desired.sets)
        self.ipvs.sync(desired.services)
        for family, rules in desired.families.items():
            self.tables[(family, "nat")].apply(rules.nat, rules.nat_hooks)
            self.tables[(family, "filter")].apply(rules.filter, rules.filter_hooks)
        self.ipsets.cleanup_stale({s.name for s in desired.sets})


def cleanup_proxy(config: Config) -> list[str]:
    """Remove our IPVS services (by the ranges the flags give), kube-dummy-if, our
    SNAT/guard rules and sets. A kernel without IPVS holds none of ours."""
    removed = [line for family in (4, 6) for table in ("nat", "filter")
               for line in TableApplier(family, table, names.is_service_chain).cleanup()]
    removed += [f"ipset {n}" for n in IPSetApplier(names.is_service_set).cleanup_stale(())]
    if os.path.exists(IPVS_PROC):
        ownership = IPVSOwnership.from_config(config, local_addresses())
        removed += [f"ipvs {what}" for what in IPVSApplier(ownership.owns).sync([])]
    removed += [f"{names.DUMMY_IF} {what}" for what in delete_device(names.DUMMY_IF)]
    return removed
