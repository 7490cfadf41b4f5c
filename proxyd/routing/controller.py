"""The BGP pod routing controller (``--run-router``).

gobgpd runs as this daemon's child, driven over gRPC on a root-only unix
socket in the runtime directory (gobgpd.py). Each sync:
  1. reads this node and every other node from the cache (model.py decides the
     ASN, router id, peers and pod CIDR adverts);
  2. (re)starts gobgpd if it is not running, and StartBgp with that identity;
  3. adds/removes peers and adverts so gobgpd holds exactly the desired ones;
  4. turns the best paths gobgpd learned into kernel routes and ipip tunnels
     (proxyd/kernel/routes.py), keeping what a peer that has not caught up
     since a restart announced (hold.py), and keeps pod egress SNAT in step
     (egress.py).
A best-path change seen by gobgpd's watch asks the runner for a sync, so
learned routes reach the kernel within the runner's minimum interval.
Stopping the daemon kills gobgpd without a NOTIFICATION (so peers with
graceful restart keep our routes while we restart) and leaves the kernel
routes in place; the next start adopts them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from lowlevel.apiobjects import has_ready_endpoint_on, service_of_slice
from lowlevel.sysctl import ensure_sysctl
from proxyd import controllers
from proxyd.config import Config
from proxyd.k8s.cache import object_key
from proxyd.kernel.addresses import connected_subnets
from proxyd.kernel.routes import RouteApplier
from proxyd.routing import egress
from proxyd.routing.bgp import IPV4_UNICAST, IPV6_UNICAST, BgpSpeaker, GracefulRestart, Peer
from proxyd.routing.gobgpd import SOCKET_NAME, GobgpdProcess, admin_port_refusal, runtime_dir
from proxyd.routing.hold import HeldPath, RouteHold
from proxyd.runner import MIN_SYNC_INTERVAL
from proxyd.problems import ProblemLog
from proxyd.routing.model import (DesiredBgp, LearnedPath, NodeError, RouterFlags,
                                  annotation_peers, bgp_node, build_bgp, build_routes,
                                  service_vips, vip_adverts)

log = logging.getLogger(__name__)

_FAMILY_NAMES = {4: IPV4_UNICAST, 6: IPV6_UNICAST}
_FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def router_flags(config: Config) -> RouterFlags:
    return RouterFlags(
        cluster_asn=config.cluster_asn, router_id=config.router_id, enable_ibgp=config.enable_ibgp,
        nodes_full_mesh=config.nodes_full_mesh, advertise_pod_cidr=config.advertise_pod_cidr,
        peer_router_ips=tuple(str(ip) for ip in config.peer_router_ips),
        peer_router_asns=tuple(config.peer_router_asns),
        peer_router_ports=tuple(config.peer_router_ports),
        peer_router_passwords=tuple(config.peer_router_passwords),
        peer_router_multihop_ttl=config.peer_router_multihop_ttl, bgp_port=config.bgp_port,
        families=config.families(),
        enable_overlay=config.enable_overlay, overlay_type=config.overlay_type,
        advertise_cluster_ip=config.advertise_cluster_ip,
        advertise_external_ip=config.advertise_external_ip,
        advertise_loadbalancer_ip=config.advertise_loadbalancer_ip)


class RoutingController:
    name = "router"
    kinds = ("nodes", "services", "endpointslices")

    def __init__(self, config: Config, node_name: str, *,
                 gobgpd: GobgpdProcess | None = None,
                 speaker_factory: Callable[[str], BgpSpeaker] = BgpSpeaker,
                 routes: RouteApplier | None = None,
                 connected: Callable[[], list[str]] = connected_subnets,
                 egress_applier: egress.PodEgress | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sysctl: Callable[[str, str], bool] = ensure_sysctl):
        self.node_name = node_name
        self.flags = router_flags(config)
        self.hold_time = int(config.bgp_holdtime.total_seconds())
        self.graceful_restart = GracefulRestart(
            int(config.bgp_graceful_restart_time.total_seconds()),
            int(config.bgp_graceful_restart_deferral_time.total_seconds())
        ) if config.bgp_graceful_restart else None
        self.sync_period = min(config.routes_sync_period, config.injected_routes_sync_period
                               ).total_seconds()
        self.min_sync_interval = min(MIN_SYNC_INTERVAL, self.sync_period)
        if gobgpd is None:
            gobgpd = GobgpdProcess(os.path.join(runtime_dir(), SOCKET_NAME))
            refusal = admin_port_refusal(config.gobgp_admin_port, gobgpd.socket_path)
            if refusal:
                log.info("%s", refusal)
        self.gobgpd = gobgpd
        # How long a route outlives the silence of the peer that announced it: as long
        # as a graceful-restart peer would keep ours (--bgp-graceful-restart-time).
        self.hold = RouteHold(config.bgp_graceful_restart_time.total_seconds())
        self._clock, self._sysctl = clock, sysctl
        self._hold_timer: threading.Timer | None = None
        self._adopted = False
        self._speaker_factory = speaker_factory
        self.routes = routes
        self._connected = connected
        self.egress = egress_applier if egress_applier is not None else (
            egress.PodEgress(self.flags.families) if config.enable_pod_egress else None)
        self._speaker: BgpSpeaker | None = None
        self._identity: tuple[int, str] | None = None
        self._peers: dict[str, Peer] = {}
        self._adverts: set[tuple[str, str]] = set()
        self._watch = None
        self._wake: Callable[[], None] = lambda: None
        self.problems = ProblemLog(log, "BGP")

    def bind_runner(self, request: Callable[[], None]) -> None:
        """The daemon hands over its runner's request(): gobgpd's watch wakes the sync."""
        self._wake = request

    # ---- one sync -----------------------------------------------------------------
    def sync(self, ctx) -> None:
        nodes = ctx.stores["nodes"]
        me_obj = nodes.get(self.node_name)
        if me_obj is None:
            raise NodeError(f"this node ({self.node_name}) has no Node object yet")
        me = bgp_node(me_obj, self.flags.cluster_asn)
        others, problems = [], controllers.BY_KEY[controllers.ROUTER].refused_annotations(
            me_obj, "node")
        for obj in nodes.list():
            try:
                others.append(bgp_node(obj, self.flags.cluster_asn))
            except NodeError as e:
                problems.append(str(e))
        self.problems.report(problems)
        desired = build_bgp(me, others, self.flags)
        desired.peers += annotation_peers(me_obj, self.flags.peer_router_multihop_ttl)
        desired.adverts += vip_adverts(self._services(ctx), me, self.flags)
        for family in self.flags.families:
            self._sysctl(_FORWARDING[family], "1")
        if self.routes is None:
            self.routes = RouteApplier()
        self._ensure_speaker(desired)
        self._sync_peers(desired)
        self._sync_adverts(desired)
        tunnels, routes = build_routes(me, self._learned_or_held(), self._connected(),
                                       self.flags, [a.prefix for a in desired.adverts])
        self.routes.sync_tunnels(tunnels)
        self.routes.sync_routes(routes)
        if self.egress is not None:
            self.egress.sync([n.pod_cidrs for n in others], [n.addresses for n in others])

    def _learned_or_held(self) -> list[LearnedPath]:
        """gobgpd's best paths, plus what a peer that has not caught up announced before."""
        learned = [HeldPath(p.prefix, p.nexthop, p.peer_address)
                   for family in self.flags.families
                   for p in self._speaker.paths(_FAMILY_NAMES[family]) if p.best and not p.local]
        established = {p.address: p.state == "established" for p in self._speaker.peers()}
        now = self._clock()
        before = self.hold.held
        paths = self.hold.paths(learned, self._peers, established, now)
        if self.hold.held and self.hold.held != before:     # said once per change, not per sync
            log.info("BGP: keeping %d route(s) until their peers catch up: %s",
                     len(self.hold.held), ", ".join(f"{p.prefix} via {p.nexthop}"
                                                   for p in self.hold.held[:5]))
        self._schedule_hold_check(self.hold.next_check(self._peers, now))
        return [LearnedPath(p.prefix, p.nexthop) for p in paths]

    def _schedule_hold_check(self, delay: float | None) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if delay is not None:
            self._hold_timer = threading.Timer(delay, lambda: self._wake())
            self._hold_timer.daemon = True
            self._hold_timer.start()

    def _services(self, ctx) -> list:
        """Every Service's VIPs, with whether this node has a ready endpoint of it."""
        local = {service_of_slice(eps) for eps in ctx.stores["endpointslices"].list()
                 if has_ready_endpoint_on(eps, self.node_name)} - {None}
        return [service_vips(svc, object_key(svc) in local)
                for svc in ctx.stores["services"].list()]

    def _ensure_speaker(self, desired: DesiredBgp) -> None:
        identity = (desired.asn, desired.router_id)
        if not self._adopted:       # what an earlier run installed is held, not deleted
            self.hold.adopt(self.routes.installed(), self._clock())
            self._adopted = True
        if not self.gobgpd.alive:
            if self._speaker is not None:
                log.warning("gobgpd exited (status %s); starting it again", self.gobgpd.returncode)
            self._close_speaker()
            self.hold.sessions_reset()
            self.gobgpd.start()
        if self._speaker is None:
            self._speaker = self._speaker_factory(self.gobgpd.api_target)
        if self._identity != identity:
            if self._identity is not None:      # the ASN or router id changed: a new speaker
                log.info("BGP identity changed %s -> %s: restarting the speaker", self._identity,
                         identity)
                self._speaker.stop()
                self._peers, self._adverts = {}, set()
                self.hold.sessions_reset()
            self._speaker.start(desired.asn, desired.router_id, self.flags.bgp_port,
                                graceful_restart=self.graceful_restart)
            self._identity = identity
        if self._watch is None or not self._watch.running:
            self._watch = self._speaker.watch_best_paths(lambda _path: self._wake(),
                                                         on_error=self._watch_failed)

    def _watch_failed(self, error) -> None:
        log.warning("gobgpd best-path watch ended (%s); the next sync re-opens it", error)
        self._wake()

    def _sync_peers(self, desired: DesiredBgp) -> None:
        wanted = {}
        for spec in desired.peers:
            families = (IPV6_UNICAST,) if ":" in spec.address else (IPV4_UNICAST,)
            wanted[spec.address] = Peer(spec.address, spec.asn, spec.port, spec.password,
                                        spec.multihop_ttl, families, hold_time=self.hold_time,
                                        description=spec.description,
                                        graceful_restart=self.graceful_restart)
        for address, peer in list(self._peers.items()):
            if wanted.get(address) != peer:
                self._speaker.delete_peer(address)
                del self._peers[address]
        for address, peer in wanted.items():
            if address not in self._peers:
                self._speaker.add_peer(peer)
                self._peers[address] = peer
                log.info("BGP peer %s AS %d added (%s)", address, peer.asn, peer.description)

    def _sync_adverts(self, desired: DesiredBgp) -> None:
        wanted = {(a.prefix, a.nexthop) for a in desired.adverts}
        for prefix, nexthop in sorted(self._adverts - wanted):
            self._speaker.withdraw(prefix, nexthop)
            self._adverts.discard((prefix, nexthop))
        for prefix, nexthop in sorted(wanted - self._adverts):
            self._speaker.advertise(prefix, nexthop)
            self._adverts.add((prefix, nexthop))
            log.info("advertising %s via %s", prefix, nexthop)

    # ---- stop -------------------------------------------------------------------------
    def _close_speaker(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._speaker is not None:
            self._speaker.close()
            self._speaker = None
        self._identity, self._peers, self._adverts = None, {}, set()

    def stop(self) -> None:
        """Kill gobgpd (no NOTIFICATION: graceful-restart peers keep our routes); the routes
        it taught the kernel stay until the next start adopts them."""
        self._schedule_hold_check(None)
        self._close_speaker()
        self.gobgpd.stop(hard=True)


def cleanup_routing(config: Config | None = None, *, routes: RouteApplier | None = None,
                    egress_applier: egress.PodEgress | None = None) -> list[str]:
    """Remove the routes and tunnels of our protocol and the pod egress SNAT, both families."""
    routes = routes or RouteApplier()
    removed = [f"route {p}" for p in routes.sync_routes([])]
    removed += [f"tunnel {t}" for t in routes.sync_tunnels([])]
    removed += egress.cleanup(egress_applier or egress.PodEgress((4, 6)))
    return removed
