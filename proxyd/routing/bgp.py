"""A typed client for gobgpd's gRPC API: small dataclasses in and out.

Callers never see protobuf types. The ``build_*`` and ``*_from_message``
functions are the pure conversions between the two worlds; ``BgpSpeaker`` is the
thin layer that sends them to gobgpd.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import threading
from typing import Callable, Iterable, Iterator

import grpc
from google.protobuf import any_pb2

from .gobgp_api import attribute_pb2 as attrs
from .gobgp_api import gobgp_pb2 as pb
from .gobgp_api import gobgp_pb2_grpc as pb_grpc

IPV4_UNICAST = "ipv4-unicast"
IPV6_UNICAST = "ipv6-unicast"
_FAMILIES = {
    IPV4_UNICAST: (pb.Family.AFI_IP, pb.Family.SAFI_UNICAST),
    IPV6_UNICAST: (pb.Family.AFI_IP6, pb.Family.SAFI_UNICAST),
}
_FAMILY_NAMES = {value: name for name, value in _FAMILIES.items()}
_SESSION_STATES = {value: name.lower()
                   for name, value in pb.PeerState.SessionState.items()}
# A locally originated path has no source address; gobgpd prints Go's nil net.IP.
_NO_NEIGHBOR = ("", "<nil>")
ORIGIN_IGP = 0
DEFAULT_TIMEOUT = 10.0


class BgpError(RuntimeError):
    """A gRPC call to gobgpd failed; the message names the call and gobgpd's reason."""

    def __init__(self, call: str, code: str, reason: str):
        super().__init__(f"gobgpd {call} failed: {reason} ({code})")
        self.call = call
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class GracefulRestart:
    restart_time: int = 90          # seconds the peer keeps our routes while we restart
    deferral_time: int = 360        # seconds we wait for End-of-RIB after a restart


@dataclasses.dataclass(frozen=True)
class Peer:
    address: str
    asn: int
    port: int = 179
    password: str = ""
    multihop_ttl: int = 0           # 0: directly connected (eBGP TTL 1)
    families: tuple[str, ...] = (IPV4_UNICAST,)
    local_address: str = ""
    passive: bool = False
    hold_time: int = 0              # 0 for each timer: gobgpd's default
    keepalive_interval: int = 0
    connect_retry: int = 0
    description: str = ""
    graceful_restart: GracefulRestart | None = None


@dataclasses.dataclass(frozen=True)
class PeerState:
    address: str
    asn: int
    state: str                      # "established", "active", "idle", "connect", ...
    received: int = 0
    accepted: int = 0


@dataclasses.dataclass(frozen=True)
class Path:
    prefix: str
    nexthop: str
    peer_address: str = ""          # "" for paths this speaker originated
    best: bool = False
    local: bool = False
    withdrawn: bool = False         # only in watch events
    as_path: tuple[int, ...] = ()


def family_of(prefix_or_address: str) -> str:
    version = ipaddress.ip_network(prefix_or_address, strict=False).version
    return IPV4_UNICAST if version == 4 else IPV6_UNICAST


def build_family(name: str) -> pb.Family:
    try:
        afi, safi = _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unsupported address family {name!r}; one of {sorted(_FAMILIES)}")
    return pb.Family(afi=afi, safi=safi)


def family_name(family: pb.Family) -> str:
    return _FAMILY_NAMES.get((family.afi, family.safi), f"afi{family.afi}-safi{family.safi}")


def _packed(message) -> any_pb2.Any:
    box = any_pb2.Any()
    box.Pack(message)
    return box


def build_global(asn: int, router_id: str, listen_port: int = 179,
                 listen_addresses: Iterable[str] = (),
                 graceful_restart: GracefulRestart | None = None) -> pb.Global:
    msg = pb.Global(asn=asn, router_id=router_id, listen_port=listen_port,
                    listen_addresses=list(listen_addresses))
    if graceful_restart:
        msg.graceful_restart.CopyFrom(pb.GracefulRestart(
            enabled=True, restart_time=graceful_restart.restart_time,
            deferral_time=graceful_restart.deferral_time))
    return msg


def build_peer(peer: Peer) -> pb.Peer:
    msg = pb.Peer(
        conf=pb.PeerConf(neighbor_address=peer.address, peer_asn=peer.asn,
                         auth_password=peer.password, description=peer.description),
        transport=pb.Transport(remote_port=peer.port, local_address=peer.local_address,
                               passive_mode=peer.passive),
        timers=pb.Timers(config=pb.TimersConfig(
            hold_time=peer.hold_time, keepalive_interval=peer.keepalive_interval,
            connect_retry=peer.connect_retry)),
    )
    if peer.multihop_ttl:
        msg.ebgp_multihop.CopyFrom(pb.EbgpMultihop(enabled=True, multihop_ttl=peer.multihop_ttl))
    gr = peer.graceful_restart
    if gr:
        msg.graceful_restart.CopyFrom(pb.GracefulRestart(
            enabled=True, restart_time=gr.restart_time, deferral_time=gr.deferral_time))
    for name in peer.families:
        afi_safi = msg.afi_safis.add()
        afi_safi.config.CopyFrom(pb.AfiSafiConfig(family=build_family(name), enabled=True))
        if gr:
            afi_safi.mp_graceful_restart.config.enabled = True
    return msg


def peer_state_from_message(msg: pb.Peer) -> PeerState:
    received = sum(a.state.received for a in msg.afi_safis)
    accepted = sum(a.state.accepted for a in msg.afi_safis)
    state = _SESSION_STATES.get(msg.state.session_state, "unknown")
    return PeerState(address=msg.conf.neighbor_address or msg.state.neighbor_address,
                     asn=msg.conf.peer_asn or msg.state.peer_asn, state=state,
                     received=received, accepted=accepted)


def build_path(prefix: str, nexthop: str) -> pb.Path:
    """The path gobgpd originates for ``prefix`` via ``nexthop``.

    IPv4 carries its next hop in NEXT_HOP; IPv6 needs MP_REACH_NLRI (RFC 4760),
    which holds both the next hop and the NLRI.
    """
    network = ipaddress.ip_network(prefix)
    hop = ipaddress.ip_address(nexthop)
    if hop.version != network.version:
        raise ValueError(f"next hop {nexthop} is not in the family of {prefix}")
    family = build_family(family_of(prefix))
    nlri = _packed(attrs.IPAddressPrefix(prefix=str(network.network_address),
                                         prefix_len=network.prefixlen))
    pattrs = [_packed(attrs.OriginAttribute(origin=ORIGIN_IGP))]
    if network.version == 4:
        pattrs.append(_packed(attrs.NextHopAttribute(next_hop=str(hop))))
    else:
        pattrs.append(_packed(attrs.MpReachNLRIAttribute(
            family=family, next_hops=[str(hop)], nlris=[nlri])))
    return pb.Path(family=family, nlri=nlri, pattrs=pattrs)


def _nlri_prefix(box: any_pb2.Any) -> str:
    prefix = attrs.IPAddressPrefix()
    if not box.Unpack(prefix):
        raise ValueError(f"not a unicast prefix NLRI: {box.type_url}")
    return str(ipaddress.ip_network(f"{prefix.prefix}/{prefix.prefix_len}"))


def _attributes(pattrs) -> tuple[str, tuple[int, ...]]:
    nexthop, as_path = "", ()
    for box in pattrs:
        if box.Is(attrs.NextHopAttribute.DESCRIPTOR):
            msg = attrs.NextHopAttribute()
            box.Unpack(msg)
            nexthop = nexthop or msg.next_hop
        elif box.Is(attrs.MpReachNLRIAttribute.DESCRIPTOR):
            msg = attrs.MpReachNLRIAttribute()
            box.Unpack(msg)
            # A link-local next hop may follow the global one (RFC 2545): keep the first.
            if msg.next_hops:
                nexthop = msg.next_hops[0]
        elif box.Is(attrs.AsPathAttribute.DESCRIPTOR):
            msg = attrs.AsPathAttribute()
            box.Unpack(msg)
            as_path = tuple(n for seg in msg.segments for n in seg.numbers)
    return nexthop, as_path


def path_from_message(msg: pb.Path) -> Path:
    nexthop, as_path = _attributes(msg.pattrs)
    local = msg.neighbor_ip in _NO_NEIGHBOR
    return Path(prefix=_nlri_prefix(msg.nlri), nexthop=nexthop,
                peer_address="" if local else msg.neighbor_ip, best=msg.best,
                local=local, withdrawn=msg.is_withdraw, as_path=as_path)


class PathWatch:
    """A running WatchEvent stream; ``stop()`` cancels it and waits for its thread.

    The watch ends on ``stop()``, when gobgpd fails or goes away (a BgpError),
    or when the callback raises (that exception). Either error is kept in
    ``error`` and handed to ``on_error``; the caller decides whether to watch again.
    """

    def __init__(self, call, deliver: Callable[[pb.WatchEventResponse], None],
                 on_error: Callable[[Exception], None] | None):
        self._call = call
        self._deliver = deliver
        self._on_error = on_error
        self._stopping = False
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="gobgp-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._call:
                self._deliver(event)
        except grpc.RpcError as exc:
            if self._stopping and exc.code() == grpc.StatusCode.CANCELLED:
                return
            self._failed(BgpError("WatchEvent", exc.code().name, exc.details() or ""))
        except Exception as exc:  # the callback's own failure
            self._call.cancel()
            self._failed(exc)

    def _failed(self, error: Exception) -> None:
        self.error = error
        if self._on_error:
            self._on_error(error)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> "PathWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class BgpSpeaker:
    """One gobgpd, reached at ``channel_target`` (``127.0.0.1:PORT`` or ``unix:PATH``)."""

    def __init__(self, channel_target: str, *, timeout: float = DEFAULT_TIMEOUT,
                 channel: grpc.Channel | None = None):
        self.target = channel_target
        self._channel = channel or grpc.insecure_channel(channel_target)
        self._stub = pb_grpc.GobgpApiStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "BgpSpeaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unary(self, name: str, request):
        try:
            return getattr(self._stub, name)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise BgpError(name, exc.code().name, exc.details() or "") from None

    def _stream(self, name: str, request) -> Iterator:
        try:
            yield from getattr(self._stub, name)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise BgpError(name, exc.code().name, exc.details() or "") from None

    def start(self, asn: int, router_id: str, listen_port: int = 179,
              listen_addresses: Iterable[str] = (),
              graceful_restart: GracefulRestart | None = None) -> None:
        """StartBgp: the speaker's AS, router id and BGP listener.

        No ``listen_addresses`` means gobgpd's default, 0.0.0.0 and ::.
        ``listen_port=-1`` opens no BGP listener at all (outgoing sessions only).
        """
        # "global" is a Python keyword: the field can only be named through a dict.
        request = pb.StartBgpRequest(**{"global": build_global(
            asn, router_id, listen_port, listen_addresses, graceful_restart)})
        self._unary("StartBgp", request)

    def stop(self) -> None:
        self._unary("StopBgp", pb.StopBgpRequest())

    def router_id(self) -> str:
        """The running speaker's router id; "" before ``start``."""
        return getattr(self._unary("GetBgp", pb.GetBgpRequest()), "global").router_id

    def add_peer(self, peer: Peer) -> None:
        self._unary("AddPeer", pb.AddPeerRequest(peer=build_peer(peer)))

    def delete_peer(self, address: str) -> None:
        self._unary("DeletePeer", pb.DeletePeerRequest(address=address))

    def peers(self) -> list[PeerState]:
        return sorted((peer_state_from_message(r.peer)
                       for r in self._stream("ListPeer", pb.ListPeerRequest())),
                      key=lambda p: p.address)

    def advertise(self, prefix: str, nexthop: str) -> None:
        self._unary("AddPath", pb.AddPathRequest(table_type=pb.GLOBAL,
                                                 path=build_path(prefix, nexthop)))

    def withdraw(self, prefix: str, nexthop: str) -> None:
        self._unary("DeletePath", pb.DeletePathRequest(
            table_type=pb.GLOBAL, family=build_family(family_of(prefix)),
            path=build_path(prefix, nexthop)))

    def paths(self, family: str = IPV4_UNICAST) -> list[Path]:
        request = pb.ListPathRequest(table_type=pb.GLOBAL, family=build_family(family),
                                     sort_type=pb.ListPathRequest.PREFIX)
        return [path_from_message(p)
                for r in self._stream("ListPath", request) for p in r.destination.paths]

    def watch_best_paths(self, callback: Callable[[Path], None], *,
                         include_existing: bool = True,
                         on_error: Callable[[Exception], None] | None = None) -> PathWatch:
        """Call ``callback(Path)`` for every change of a best path in the global table.

        A new or replaced best path arrives with ``withdrawn=False``, a lost one
        with ``withdrawn=True``. ``include_existing`` replays the current best
        paths first. The callback runs on the watch's own thread.
        """
        Filter = pb.WatchEventRequest.Table.Filter
        request = pb.WatchEventRequest(table=pb.WatchEventRequest.Table(
            filters=[Filter(type=Filter.BEST, init=include_existing)]))

        def deliver(event: pb.WatchEventResponse) -> None:
            for msg in event.table.paths:
                callback(path_from_message(msg))

        return PathWatch(self._stub.WatchEvent(request), deliver, on_error)
