"""The BGP engine with real sessions: gobgpd against gobgpd and against bird2.

Every daemon runs inside a namespace the test made. gobgpd's gRPC API is a
unix socket, a file not bound to any network namespace, so this process
reaches it by its path. (A TCP API inside the namespace would not do: grpc's
C core connects from internal threads that keep the namespace they were
created in, whatever thread asks.)
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import tempfile
import time

import pytest

from helpers.netns import run, veth_pair, wait_for
from helpers.traffic import tcp_exchange
from proxyd.routing.bgp import (IPV4_UNICAST, IPV6_UNICAST, BgpError, BgpSpeaker,
                                GracefulRestart, Path, Peer)
from proxyd.routing.gobgpd import GobgpdError, GobgpdProcess

pytestmark = pytest.mark.skipif(not shutil.which("gobgpd"),
                                reason="needs Debian's gobgpd (make setup installs it)")

ASN = 64512
BIRD_ASN = 64513


@pytest.fixture
def sockdir():
    path = tempfile.mkdtemp(prefix="krt-bgp-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gobgpd(sockdir):
    """Start a gobgpd inside a namespace: returns (process, speaker); all stopped after."""
    cleanups: list = []

    def start(ns):
        proc = GobgpdProcess(os.path.join(sockdir, ns.name, "gobgp.sock"), netns_runner=ns.popen)
        cleanups.append(proc.stop)
        proc.start()
        speaker = BgpSpeaker(proc.api_target)
        cleanups.append(speaker.close)
        return proc, speaker

    yield start
    for cleanup in reversed(cleanups):
        cleanup()


def _addr(ns, dev: str, cidr: str) -> None:
    extra = ["nodad"] if ":" in cidr else []
    ns.exec(["ip", "addr", "add", cidr, "dev", dev, *extra])


def _two_nodes(netns_factory):
    a, b = netns_factory("bgp-a"), netns_factory("bgp-b")
    veth_pair(a, "eth0", b, "eth0")
    _addr(a, "eth0", "10.0.0.1/24")
    _addr(b, "eth0", "10.0.0.2/24")
    _addr(a, "eth0", "fd00:1::1/64")
    _addr(b, "eth0", "fd00:1::2/64")
    return a, b


def _established(speaker: BgpSpeaker, address: str):
    return lambda: any(p.address == address and p.state == "established"
                       for p in speaker.peers())


class Recorder:
    """Collects watch callbacks; ``next_for(prefix)`` waits for the next one about a prefix."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()

    def __call__(self, path: Path) -> None:
        self.events.put((time.monotonic(), path))

    def next_for(self, prefix: str, timeout: float = 10.0) -> tuple[float, Path]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no watch event for {prefix} within {timeout}s")
            try:
                when, path = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if path.prefix == prefix:
                return when, path


def test_ibgp_advert_seen_as_best_path_and_in_watch(netns_factory, gobgpd, record_property):
    a, b = _two_nodes(netns_factory)
    proc_a, speaker_a = gobgpd(a)
    proc_b, speaker_b = gobgpd(b)
    speaker_a.start(ASN, "10.0.0.1")
    speaker_b.start(ASN, "10.0.0.2")
    assert speaker_b.router_id() == "10.0.0.2"

    recorder = Recorder()
    watch = speaker_b.watch_best_paths(recorder)
    try:
        t0 = time.monotonic()
        speaker_a.add_peer(Peer("10.0.0.2", ASN))
        speaker_b.add_peer(Peer("10.0.0.1", ASN))
        wait_for(_established(speaker_b, "10.0.0.1"), timeout=30, what="iBGP session A-B")
        wait_for(_established(speaker_a, "10.0.0.2"), timeout=5, what="A's view of the session")
        established_s = time.monotonic() - t0
        state = {p.address: p for p in speaker_a.peers()}["10.0.0.2"]
        assert (state.asn, state.state) == (ASN, "established")

        t_adv = time.monotonic()
        speaker_a.advertise("10.244.0.0/24", "10.0.0.1")
        when, seen = recorder.next_for("10.244.0.0/24")
        advert_to_watch_ms = (when - t_adv) * 1000
        assert (seen.nexthop, seen.peer_address, seen.withdrawn) == ("10.0.0.1", "10.0.0.1", False)

        learned = wait_for(lambda: [p for p in speaker_b.paths(IPV4_UNICAST)
                                    if p.prefix == "10.244.0.0/24"], what="path in B's RIB")
        assert [(p.nexthop, p.peer_address, p.best, p.local) for p in learned] == \
            [("10.0.0.1", "10.0.0.1", True, False)]
        own = [p for p in speaker_a.paths() if p.prefix == "10.244.0.0/24"]
        assert [(p.nexthop, p.best, p.local) for p in own] == [("10.0.0.1", True, True)]
        assert wait_for(lambda: [p.accepted for p in speaker_b.peers()] == [1],
                        what="B counting one accepted prefix")

        speaker_a.withdraw("10.244.0.0/24", "10.0.0.1")
        _, gone = recorder.next_for("10.244.0.0/24")
        assert gone.withdrawn
        wait_for(lambda: not [p for p in speaker_b.paths() if p.prefix == "10.244.0.0/24"],
                 what="path gone from B's RIB")
    finally:
        watch.stop()
    assert not watch.running and watch.error is None

    speaker_b.delete_peer("10.0.0.1")
    assert speaker_b.peers() == []
    wait_for(lambda: not _established(speaker_a, "10.0.0.2")(), what="A seeing the session end")

    record_property("established_s", round(established_s, 2))
    record_property("advert_to_watch_ms", round(advert_to_watch_ms, 1))
    record_property("gobgpd_rss_mib", round(proc_a.rss_bytes() / 2**20, 1))
    print(f"\ntime to established {established_s:.2f}s, advertise->watch "
          f"{advert_to_watch_ms:.1f}ms, gobgpd RSS {proc_a.rss_bytes() / 2**20:.1f} MiB")


def test_ipv6_unicast_over_mp_bgp(netns_factory, gobgpd):
    a, b = _two_nodes(netns_factory)
    _, speaker_a = gobgpd(a)
    _, speaker_b = gobgpd(b)
    speaker_a.start(ASN, "10.0.0.1")
    speaker_b.start(ASN, "10.0.0.2")
    speaker_a.add_peer(Peer("fd00:1::2", ASN, families=(IPV6_UNICAST,)))
    speaker_b.add_peer(Peer("fd00:1::1", ASN, families=(IPV6_UNICAST,)))
    wait_for(_established(speaker_b, "fd00:1::1"), timeout=30, what="iBGP session over IPv6")

    recorder = Recorder()
    with speaker_a.watch_best_paths(recorder):
        speaker_a.advertise("fd00:244::/64", "fd00:1::1")
        speaker_b.advertise("fd00:245::/64", "fd00:1::2")
        _, from_b = recorder.next_for("fd00:245::/64")
    assert (from_b.nexthop, from_b.peer_address) == ("fd00:1::2", "fd00:1::2")
    learned = wait_for(lambda: [(p.prefix, p.nexthop, p.best) for p in speaker_b.paths(IPV6_UNICAST)
                                if not p.local], what="B learning A's IPv6 prefix")
    assert learned == [("fd00:244::/64", "fd00:1::1", True)]
    assert not [p for p in speaker_b.paths(IPV4_UNICAST)], "no IPv4 path was advertised"


BIRD_CONF = """\
router id 10.0.1.3;
log "{log}" all;
protocol device {{ scan time 1; }}
protocol kernel {{
    ipv4 {{ import none; export where source = RTS_BGP; }};
}}
protocol static {{
    ipv4;
    route 10.245.0.0/24 blackhole;
}}
protocol bgp gobgp {{
    local 10.0.1.3 as {bird_asn};
    neighbor 10.0.1.1 as {asn};
    connect delay time 1;
    ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
"""


def test_bird_learns_our_prefix_and_packets_follow_it(netns_factory, gobgpd, sockdir):
    if not shutil.which("bird"):
        pytest.skip("needs Debian's bird2 (make setup installs it)")
    node, peer, pod = netns_factory("bgp-node"), netns_factory("bgp-bird"), netns_factory("pod")
    node.sysctl("net.ipv4.ip_forward", 1)
    veth_pair(node, "eth0", peer, "eth0")
    _addr(node, "eth0", "10.0.1.1/24")
    _addr(peer, "eth0", "10.0.1.3/24")
    veth_pair(node, "pod0", pod, "eth0")
    _addr(node, "pod0", "10.244.0.1/24")
    _addr(pod, "eth0", "10.244.0.5/24")
    pod.exec(["ip", "route", "add", "default", "via", "10.244.0.1"])
    # Without a BGP-learned route the bird namespace cannot reach the pod.
    assert peer.exec(["ip", "route", "get", "10.244.0.5"], check=False).returncode != 0

    _, speaker = gobgpd(node)
    speaker.start(ASN, "10.0.1.1", listen_addresses=("10.0.1.1",))
    speaker.add_peer(Peer("10.0.1.3", BIRD_ASN))
    speaker.advertise("10.244.0.0/24", "10.0.1.1")

    conf = os.path.join(sockdir, "bird.conf")
    with open(conf, "w") as f:
        f.write(BIRD_CONF.format(log=os.path.join(sockdir, "bird.log"), asn=ASN,
                                 bird_asn=BIRD_ASN))
    ctl = os.path.join(sockdir, "bird.ctl")
    t0 = time.monotonic()
    bird = peer.popen(["bird", "-f", "-c", conf, "-s", ctl])
    try:
        wait_for(_established(speaker, "10.0.1.3"), timeout=30, what="eBGP session with bird")
        print(f"\nbird session established {time.monotonic() - t0:.2f}s after bird started")

        route = wait_for(lambda: peer.exec(["ip", "route", "show", "10.244.0.0/24"]).stdout,
                         what="bird installing 10.244.0.0/24 into its kernel table")
        assert "via 10.0.1.1" in route and "proto bird" in route, route

        learned = wait_for(lambda: [p for p in speaker.paths() if p.prefix == "10.245.0.0/24"],
                           what="gobgpd learning bird's static prefix")
        assert [(p.nexthop, p.peer_address, p.best, p.as_path) for p in learned] == \
            [("10.0.1.3", "10.0.1.3", True, (BIRD_ASN,))]

        assert tcp_exchange(peer, pod, "10.244.0.5") == "10.0.1.3"

        speaker.withdraw("10.244.0.0/24", "10.0.1.1")
        wait_for(lambda: not peer.exec(["ip", "route", "show", "10.244.0.0/24"]).stdout,
                 what="bird removing the withdrawn route")
    finally:
        bird.send_signal(signal.SIGTERM)
        bird.wait(10)


def test_killed_gobgpd_is_seen_dead_and_stop_is_idempotent(netns_factory, gobgpd):
    ns = netns_factory("bgp-kill")
    proc, speaker = gobgpd(ns)
    speaker.start(ASN, "10.0.9.1", listen_port=-1)
    pid = proc.pid
    assert proc.alive and proc.rss_bytes() > 1_000_000
    twin = GobgpdProcess(proc.socket_path, netns_runner=ns.popen)
    with pytest.raises(GobgpdError, match="something already answers"):
        twin.start()
    assert twin.pid is None

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive, what="gobgpd seen dead")
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(BgpError, match=r"gobgpd ListPeer failed: .*\(UNAVAILABLE\)"):
        speaker.peers()
    proc.stop()
    proc.stop()
    assert run(["ip", "netns", "pids", ns.name]).stdout.split() == []
    assert not os.path.exists(f"/proc/{pid}")

    # What a supervisor does after a crash: start again, and the new gobgpd is empty.
    proc.start()
    assert proc.alive and proc.pid != pid
    assert speaker.router_id() == ""
    proc.stop()
    assert not proc.alive and proc.returncode == 0
    proc.stop()


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful-restart", "no-graceful-restart"])
def test_a_killed_speakers_routes_stay_with_its_peer_only_with_graceful_restart(
        netns_factory, gobgpd, graceful):
    """What kube-router's stop and crash look like to a peer: gobgpd killed (no NOTIFICATION).
    With graceful restart negotiated the peer keeps the routes, marked stale."""
    a, b = _two_nodes(netns_factory)
    proc_a, speaker_a = gobgpd(a)
    _, speaker_b = gobgpd(b)
    gr = GracefulRestart(restart_time=30, deferral_time=60) if graceful else None
    speaker_a.start(ASN, "10.0.0.1", graceful_restart=gr)
    speaker_b.start(ASN, "10.0.0.2", graceful_restart=gr)
    speaker_a.add_peer(Peer("10.0.0.2", ASN, graceful_restart=gr))
    speaker_b.add_peer(Peer("10.0.0.1", ASN, graceful_restart=gr))
    wait_for(_established(speaker_b, "10.0.0.1"), timeout=30, what="iBGP session A-B")
    speaker_a.advertise("10.244.0.0/24", "10.0.0.1")
    learned = lambda: [p for p in speaker_b.paths() if p.prefix == "10.244.0.0/24"]  # noqa: E731
    wait_for(learned, what="B learning A's prefix")
    proc_a.stop(hard=True)                     # SIGKILL: as when kube-router dies or stops
    wait_for(lambda: not _established(speaker_b, "10.0.0.1")(), timeout=10,
             what="B seeing the session end")
    time.sleep(1)
    if graceful:
        assert [(p.nexthop, p.best) for p in learned()] == [("10.0.0.1", True)]
    else:
        assert learned() == []
