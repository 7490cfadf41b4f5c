"""BgpSpeaker against an in-process gRPC server speaking gobgpd's API (no gobgpd)."""
import queue
import threading
from concurrent import futures

import grpc
from google.protobuf import empty_pb2
import pytest

from proxyd.routing import bgp
from proxyd.routing.bgp import BgpError, BgpSpeaker, Peer
from proxyd.routing.gobgp_api import gobgp_pb2 as pb
from proxyd.routing.gobgp_api import gobgp_pb2_grpc as pb_grpc


class FakeGobgpd(pb_grpc.GobgpApiServicer):
    """Keeps what it is sent; answers like gobgpd does for the calls the client uses."""

    def __init__(self):
        self.global_config = None
        self.peers: dict[str, pb.Peer] = {}
        self.paths: list[pb.Path] = []
        self.deleted: list[pb.DeletePathRequest] = []
        self.watch_events: queue.Queue = queue.Queue()
        self.watch_requests: list[pb.WatchEventRequest] = []
        self.watch_ended = threading.Event()

    def StartBgp(self, request, context):
        self.global_config = getattr(request, "global")
        return empty_pb2.Empty()

    def AddPeer(self, request, context):
        address = request.peer.conf.neighbor_address
        if address in self.peers:
            context.abort(grpc.StatusCode.UNKNOWN, f"can't overwrite the existing peer: {address}")
        self.peers[address] = request.peer
        return empty_pb2.Empty()

    def ListPeer(self, request, context):
        for peer in self.peers.values():
            out = pb.Peer()
            out.CopyFrom(peer)
            out.state.session_state = pb.PeerState.ESTABLISHED
            yield pb.ListPeerResponse(peer=out)

    def AddPath(self, request, context):
        self.paths.append(request.path)
        return pb.AddPathResponse(uuid=b"0123456789abcdef")

    def DeletePath(self, request, context):
        self.deleted.append(request)
        return empty_pb2.Empty()

    def ListPath(self, request, context):
        for path in self.paths:
            if path.family == request.family:
                out = pb.Path()
                out.CopyFrom(path)
                out.best, out.neighbor_ip = True, "<nil>"
                yield pb.ListPathResponse(destination=pb.Destination(paths=[out]))

    def WatchEvent(self, request, context):
        self.watch_requests.append(request)
        try:
            while context.is_active():
                try:
                    item = self.watch_events.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, Exception):
                    context.abort(grpc.StatusCode.INTERNAL, str(item))
                yield item
        finally:
            self.watch_ended.set()


@pytest.fixture
def fake(tmp_path):
    servicer = FakeGobgpd()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_GobgpApiServicer_to_server(servicer, server)
    target = f"unix:{tmp_path}/api.sock"
    server.add_insecure_port(target)
    server.start()
    speaker = BgpSpeaker(target, timeout=5)
    yield servicer, speaker
    speaker.close()
    server.stop(grace=None)


def test_start_sends_the_global_config(fake):
    servicer, speaker = fake
    speaker.start(64512, "10.0.0.1", listen_port=1179, listen_addresses=("10.0.0.1",))
    assert (servicer.global_config.asn, servicer.global_config.router_id,
            servicer.global_config.listen_port,
            list(servicer.global_config.listen_addresses)) == (64512, "10.0.0.1", 1179,
                                                               ["10.0.0.1"])


def test_grpc_failure_names_the_call_and_gobgpds_reason(fake):
    _, speaker = fake
    speaker.add_peer(Peer("10.0.0.2", 64512))
    with pytest.raises(BgpError) as err:
        speaker.add_peer(Peer("10.0.0.2", 64512))
    assert str(err.value) == ("gobgpd AddPeer failed: can't overwrite the existing peer: "
                              "10.0.0.2 (UNKNOWN)")
    assert (err.value.call, err.value.code) == ("AddPeer", "UNKNOWN")


def test_unimplemented_call_is_a_bgp_error_too(fake):
    _, speaker = fake
    with pytest.raises(BgpError, match=r"gobgpd DeletePeer failed: .*\(UNIMPLEMENTED\)"):
        speaker.delete_peer("10.0.0.2")


def test_unreachable_gobgpd_is_a_bgp_error(tmp_path):
    with BgpSpeaker(f"unix:{tmp_path}/nothing.sock", timeout=2) as speaker:
        with pytest.raises(BgpError, match=r"gobgpd ListPeer failed: .*\(UNAVAILABLE\)"):
            speaker.peers()


def test_peers_and_paths_come_back_as_dataclasses(fake):
    servicer, speaker = fake
    speaker.add_peer(Peer("10.0.0.3", 64512))
    speaker.add_peer(Peer("10.0.0.2", 64513))
    assert [(p.address, p.asn, p.state) for p in speaker.peers()] == \
        [("10.0.0.2", 64513, "established"), ("10.0.0.3", 64512, "established")]

    speaker.advertise("10.244.0.0/24", "10.0.0.1")
    speaker.advertise("fd00:244::/64", "fd00::1")
    assert speaker.paths(bgp.IPV4_UNICAST) == [
        bgp.Path("10.244.0.0/24", "10.0.0.1", best=True, local=True)]
    assert speaker.paths(bgp.IPV6_UNICAST) == [
        bgp.Path("fd00:244::/64", "fd00::1", best=True, local=True)]

    speaker.withdraw("fd00:244::/64", "fd00::1")
    (request,) = servicer.deleted
    # DeletePath without a path deletes *every* local path: the path must be there.
    assert request.HasField("path") and request.table_type == pb.GLOBAL
    assert bgp.path_from_message(request.path).prefix == "fd00:244::/64"


def _event(*paths: pb.Path) -> pb.WatchEventResponse:
    return pb.WatchEventResponse(table=pb.WatchEventResponse.TableEvent(paths=list(paths)))


def test_watch_delivers_adds_and_withdrawals_then_stops(fake):
    servicer, speaker = fake
    seen: queue.Queue = queue.Queue()
    watch = speaker.watch_best_paths(seen.put)
    add = bgp.build_path("10.244.0.0/24", "10.0.0.1")
    add.neighbor_ip = "10.0.0.1"
    gone = pb.Path()
    gone.CopyFrom(add)
    gone.is_withdraw = True
    servicer.watch_events.put(_event(add))
    servicer.watch_events.put(_event(gone))
    first, second = seen.get(timeout=5), seen.get(timeout=5)
    assert (first.prefix, first.peer_address, first.withdrawn) == \
        ("10.244.0.0/24", "10.0.0.1", False)
    assert second.withdrawn
    (request,) = servicer.watch_requests
    assert [(f.type, f.init) for f in request.table.filters] == \
        [(pb.WatchEventRequest.Table.Filter.BEST, True)]

    watch.stop()
    assert not watch.running and watch.error is None
    assert servicer.watch_ended.wait(5), "the server never saw the watch end"
    watch.stop()


def test_watch_failure_is_reported_not_swallowed(fake):
    servicer, speaker = fake
    errors: queue.Queue = queue.Queue()
    watch = speaker.watch_best_paths(lambda path: None, on_error=errors.put)
    servicer.watch_events.put(RuntimeError("table gone"))
    error = errors.get(timeout=5)
    assert str(error) == "gobgpd WatchEvent failed: table gone (INTERNAL)"
    assert watch.error is error
    watch.stop()
    assert not watch.running


def test_callback_failure_ends_the_watch_and_is_reported(fake):
    servicer, speaker = fake
    errors: queue.Queue = queue.Queue()

    def callback(path):
        raise KeyError(path.prefix)

    watch = speaker.watch_best_paths(callback, on_error=errors.put)
    servicer.watch_events.put(_event(bgp.build_path("10.244.0.0/24", "10.0.0.1")))
    error = errors.get(timeout=5)
    assert isinstance(error, KeyError) and error.args == ("10.244.0.0/24",)
    assert servicer.watch_ended.wait(5), "the stream was not cancelled"
    watch.stop()
    assert not watch.running and watch.error is error
