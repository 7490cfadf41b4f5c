"""The IPVS service proxy controller (``--run-service-proxy``).

The node's desired proxy state lives in a ``ProxyState`` (state.py: one
fragment per Service, from model.py's ServicePorts and build.py's IPVS
services, VIPs, sets and rules), kept current change by change. A full sync
(the first, every --ipvs-sync-period, and the retry after any failure) loads
it from the caches and hands the whole of it to the appliers, which read the
kernel and repair whatever differs. Every other sync feeds the tracker's
changes to the state and writes only what they touched, without reading the
kernel. Either way the order keeps traffic flowing: VIPs and sets first, then
IPVS, then the rules that reference them, then what is no longer wanted.
The node's own addresses (--nodeport-bindon-all-ip) are read on full syncs.

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
import threading

from lowlevel.apiobjects import node_addresses, pod_cidrs, service_of_slice
from lowlevel.sysctl import ensure_sysctl
from proxyd.config import Config
from proxyd.kernel import names
from proxyd.kernel.addresses import local_addresses
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.ipvs import IPVSApplier, ensure_timeouts
from proxyd.kernel.vips import VIPApplier, delete_device
from proxyd.proxy.build import ProxyFlags
from proxyd.proxy.state import ProxyDelta, ProxyState
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


# Seconds between looks at destinations draining under --ipvs-graceful-termination.
DRAIN_RECHECK = 5.0

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
        self.state: ProxyState | None = None
        self.last_delta = ProxyDelta()
        self._request = None

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

    @staticmethod
    def relevant(kind: str, old: dict | None, new: dict | None) -> bool:
        """Whether a change moves anything the proxy reads (a node's heartbeat, a
        Service's managedFields, a slice's resourceVersion alone: no)."""
        if old is None or new is None:
            return True
        if kind == "nodes":
            return (node_addresses(old), pod_cidrs(old)[0]) != (node_addresses(new),
                                                                pod_cidrs(new)[0])
        if kind == "services":
            def read(s):
                return (s.get("spec"), (s.get("metadata") or {}).get("annotations"),
                        (s.get("status") or {}).get("loadBalancer"))
        else:
            def read(s):
                return (s.get("endpoints"), s.get("ports"), service_of_slice(s))
        return read(old) != read(new)

    def bind_runner(self, request) -> None:
        self._request = request

    def sync(self, ctx) -> None:
        if ctx.stores["nodes"].get(self.node_name) is None:
            raise NodeError(f"this node ({self.node_name}) has no Node object yet")
        state, self.state = self.state, None        # until this sync succeeds
        if ctx.full or state is None or not self._appliers_ready():
            self._full_sync(ctx.stores)
        else:
            delta = state.update(ctx.changes)
            self._report(state)
            self._apply(delta, state)
            self.last_delta, self.state = delta, state
        self._recheck_drains()

    def _appliers_ready(self) -> bool:
        return all(a.has_applied for a in (self.vips, self.ipsets, self.ipvs,
                                           *self.tables.values()))

    def _report(self, state: ProxyState) -> None:
        self.refused.report(state.refused_list())
        self.problems.report(state.problem_list())
        view = state.view
        self.ownership = self.ownership.with_addresses(
            set(view.local_addresses) | set(view.addresses.values()))

    def _full_sync(self, stores) -> None:
        """Everything from the caches; the appliers read the kernel and repair it."""
        state = ProxyState(self.node_name, self.flags, self.hairpin_all,
                           self._checked_external if self.strict_external else None)
        state.load(stores["services"].list(), stores["endpointslices"].list(),
                   stores["nodes"].list(), self._addresses())
        self._report(state)
        desired = state.desired()
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
        self.last_delta, self.state = ProxyDelta(), state

    def _apply(self, delta: ProxyDelta, state: ProxyState) -> None:
        """Only what the changes touched, in the full sync's order."""
        if delta.vips_added:
            self.vips.apply_changes(delta.vips_added, ())
        if delta.sets:
            self.ipsets.apply_changes(delta.sets.values())
        if delta.services or self.ipvs.draining:
            self.ipvs.apply_changes(delta.services)
        for family, chains in delta.chains.items():
            self.tables[(family, "nat")].apply_changes(chains)
        if delta.vips_removed:
            self.vips.apply_changes((), delta.vips_removed)

    def _recheck_drains(self) -> None:
        """A destination draining gracefully is looked at again without waiting for a change."""
        if self.ipvs.draining and self._request is not None:
            timer = threading.Timer(DRAIN_RECHECK, self._request)
            timer.daemon = True
            timer.start()


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
