"""Peer/Path dataclasses <-> gobgpd's protobuf messages, without gobgpd."""
import pytest

from proxyd.routing import bgp
from proxyd.routing.bgp import GracefulRestart, Path, Peer
from proxyd.routing.gobgp_api import attribute_pb2 as attrs
from proxyd.routing.gobgp_api import gobgp_pb2 as pb


def _unpack(box, cls):
    msg = cls()
    assert box.Unpack(msg), f"{box.type_url} is not {cls.__name__}"
    return msg


def test_ipv4_path_carries_next_hop_attribute():
    msg = bgp.build_path("10.244.1.0/24", "192.168.1.10")
    assert (msg.family.afi, msg.family.safi) == (pb.Family.AFI_IP, pb.Family.SAFI_UNICAST)
    nlri = _unpack(msg.nlri, attrs.IPAddressPrefix)
    assert (nlri.prefix, nlri.prefix_len) == ("10.244.1.0", 24)
    origin = _unpack(msg.pattrs[0], attrs.OriginAttribute)
    nexthop = _unpack(msg.pattrs[1], attrs.NextHopAttribute)
    assert (origin.origin, nexthop.next_hop) == (0, "192.168.1.10")
    assert len(msg.pattrs) == 2


def test_ipv6_path_carries_mp_reach_with_the_nlri():
    msg = bgp.build_path("fd00:244:0:1::/64", "fd00::10")
    assert (msg.family.afi, msg.family.safi) == (pb.Family.AFI_IP6, pb.Family.SAFI_UNICAST)
    mp = _unpack(msg.pattrs[1], attrs.MpReachNLRIAttribute)
    assert list(mp.next_hops) == ["fd00::10"]
    assert mp.family == msg.family
    assert [_unpack(n, attrs.IPAddressPrefix).prefix for n in mp.nlris] == ["fd00:244:0:1::"]
    assert not any(p.Is(attrs.NextHopAttribute.DESCRIPTOR) for p in msg.pattrs)


@pytest.mark.parametrize("prefix,nexthop", [("10.0.0.0/24", "fd00::1"), ("fd00::/64", "10.0.0.1")])
def test_next_hop_of_another_family_is_refused(prefix, nexthop):
    with pytest.raises(ValueError, match="not in the family"):
        bgp.build_path(prefix, nexthop)


def test_prefix_with_host_bits_is_refused():
    with pytest.raises(ValueError):
        bgp.build_path("10.244.1.7/24", "10.0.0.1")


def _as_received(msg: pb.Path, neighbor_ip: str, best: bool, as_path=()) -> pb.Path:
    """``msg`` the way gobgpd lists it: with source, best flag and AS_PATH."""
    out = pb.Path()
    out.CopyFrom(msg)
    out.neighbor_ip, out.best = neighbor_ip, best
    if as_path:
        seg = attrs.AsSegment(type=attrs.AsSegment.AS_SEQUENCE, numbers=list(as_path))
        out.pattrs.add().Pack(attrs.AsPathAttribute(segments=[seg]))
    return out


@pytest.mark.parametrize("prefix,nexthop", [("10.244.1.0/24", "192.168.1.10"),
                                            ("fd00:244::/64", "fd00::10")])
def test_learned_path_round_trips(prefix, nexthop):
    msg = _as_received(bgp.build_path(prefix, nexthop), "192.168.1.10", True, (64513, 64514))
    assert bgp.path_from_message(msg) == Path(prefix=prefix, nexthop=nexthop,
                                              peer_address="192.168.1.10", best=True,
                                              local=False, as_path=(64513, 64514))


def test_locally_originated_path_has_no_peer():
    # gobgpd prints a local path's missing source address as Go's nil net.IP.
    msg = _as_received(bgp.build_path("10.244.1.0/24", "10.0.0.1"), "<nil>", True)
    path = bgp.path_from_message(msg)
    assert (path.local, path.peer_address) == (True, "")


def test_withdrawal_is_flagged():
    msg = _as_received(bgp.build_path("10.244.1.0/24", "10.0.0.1"), "10.0.0.1", False)
    msg.is_withdraw = True
    assert bgp.path_from_message(msg).withdrawn


def test_mp_reach_link_local_second_next_hop_is_not_used():
    msg = bgp.build_path("fd00:244::/64", "fd00::10")
    mp = _unpack(msg.pattrs[1], attrs.MpReachNLRIAttribute)
    mp.next_hops.append("fe80::1")
    msg.pattrs[1].Pack(mp)
    assert bgp.path_from_message(_as_received(msg, "fd00::10", True)).nexthop == "fd00::10"


def test_non_unicast_nlri_is_refused():
    msg = pb.Path()
    msg.nlri.Pack(attrs.LabeledIPAddressPrefix(prefix="10.0.0.0", prefix_len=24, labels=[16]))
    with pytest.raises(ValueError, match="not a unicast prefix"):
        bgp.path_from_message(msg)


def test_peer_defaults():
    msg = bgp.build_peer(Peer("10.0.0.2", 64512))
    assert (msg.conf.neighbor_address, msg.conf.peer_asn, msg.conf.auth_password) == \
        ("10.0.0.2", 64512, "")
    assert msg.transport.remote_port == 179 and not msg.transport.passive_mode
    assert not msg.HasField("ebgp_multihop") and not msg.HasField("graceful_restart")
    assert [(a.config.family.afi, a.config.enabled) for a in msg.afi_safis] == \
        [(pb.Family.AFI_IP, True)]
    assert msg.timers.config.hold_time == 0   # gobgpd fills in its default


def test_peer_with_every_option():
    peer = Peer("fd00::2", 65001, port=1790, password="s3cret", multihop_ttl=3,
                families=(bgp.IPV4_UNICAST, bgp.IPV6_UNICAST), local_address="fd00::1",
                passive=True, hold_time=9, keepalive_interval=3, connect_retry=5,
                description="node-b", graceful_restart=GracefulRestart(120, 300))
    msg = bgp.build_peer(peer)
    assert msg.conf.auth_password == "s3cret" and msg.conf.description == "node-b"
    assert (msg.transport.remote_port, msg.transport.local_address,
            msg.transport.passive_mode) == (1790, "fd00::1", True)
    assert (msg.ebgp_multihop.enabled, msg.ebgp_multihop.multihop_ttl) == (True, 3)
    assert (msg.timers.config.hold_time, msg.timers.config.keepalive_interval,
            msg.timers.config.connect_retry) == (9, 3, 5)
    assert (msg.graceful_restart.enabled, msg.graceful_restart.restart_time,
            msg.graceful_restart.deferral_time) == (True, 120, 300)
    assert [a.config.family.afi for a in msg.afi_safis] == [pb.Family.AFI_IP, pb.Family.AFI_IP6]
    assert all(a.mp_graceful_restart.config.enabled for a in msg.afi_safis)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unsupported address family 'l2vpn-evpn'"):
        bgp.build_peer(Peer("10.0.0.2", 1, families=("l2vpn-evpn",)))


def test_peer_state_sums_prefix_counters():
    msg = pb.Peer(conf=pb.PeerConf(neighbor_address="10.0.0.2", peer_asn=64512),
                  state=pb.PeerState(session_state=pb.PeerState.ESTABLISHED))
    for received, accepted in ((3, 2), (1, 1)):
        msg.afi_safis.add().state.CopyFrom(pb.AfiSafiState(received=received, accepted=accepted))
    assert bgp.peer_state_from_message(msg) == bgp.PeerState("10.0.0.2", 64512, "established",
                                                             received=4, accepted=3)
    msg.state.session_state = pb.PeerState.ACTIVE
    assert bgp.peer_state_from_message(msg).state == "active"


def test_global_config():
    msg = bgp.build_global(64512, "10.0.0.1", 1179, ["10.0.0.1"], GracefulRestart(90, 360))
    assert (msg.asn, msg.router_id, msg.listen_port, list(msg.listen_addresses)) == \
        (64512, "10.0.0.1", 1179, ["10.0.0.1"])
    assert (msg.graceful_restart.enabled, msg.graceful_restart.deferral_time) == (True, 360)
    assert not bgp.build_global(64512, "10.0.0.1").HasField("graceful_restart")
