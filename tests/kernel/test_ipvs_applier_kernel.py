"""The service proxy's appliers against a real kernel: VIPs on kube-dummy-if, IPVS services.

The node is ``host_ns``; two backends live in their own namespaces behind
veths, each answering TCP and UDP with its name. The appliers run in the
node's namespace and real requests go through the VIP. Beside ours, a
foreign virtual service made with ipvsadm must come through every sync
unchanged.

pyroute2 0.9 opens its netlink socket per thread, on first use, in the
namespace of that thread: every applier call runs in a thread that has
entered the node's namespace (``Netns.call``).
"""
from __future__ import annotations

import collections
import queue
import socket
import threading

import pytest

from helpers.netns import veth_pair, wait_for
from proxyd.kernel.ipvs import Destination, IPVSApplier, IPVSSyncError, VirtualService
from proxyd.kernel.vips import VIPApplier
from helpers.traffic import read_line

VIP, VIP6 = "10.96.0.10", "fd00:96::10"
PORT, BACKEND_PORT, DNS, BACKEND_DNS = 80, 8080, 53, 5353
FOREIGN = "192.0.2.1"
TIMEOUT = 20  # Python in the TCG guest is ~20x slower than on a host


def owned(protocol, address, port):
    return address.startswith(("10.96.", "fd00:96:")) and port != 9999


class Backend:
    """TCP and UDP servers in one namespace, on IPv4 and IPv6, answering with their name."""

    def __init__(self, ns, index: int):
        self.name = f"backend-{index}"
        self.addr, self.addr6 = f"10.200.{index}.2", f"fd00:200:{index}::2"
        self.socks = []
        for family, addr in ((socket.AF_INET, self.addr), (socket.AF_INET6, self.addr6)):
            tcp = ns.socket(family, socket.SOCK_STREAM)
            tcp.bind((addr, BACKEND_PORT))
            tcp.listen(16)
            udp = ns.socket(family, socket.SOCK_DGRAM)
            udp.bind((addr, BACKEND_DNS))
            self.socks += [tcp, udp]
            threading.Thread(target=self._tcp, args=(tcp,), daemon=True).start()
            threading.Thread(target=self._udp, args=(udp,), daemon=True).start()

    def _tcp(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name.encode() + b"\n")

    def _udp(self, sock):
        while True:
            try:
                _, peer = sock.recvfrom(64)
                if peer is None:       # shut down
                    return
                sock.sendto(self.name.encode(), peer)
            except OSError:
                return

    def close(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def node(host_ns, netns_factory):
    """The node with two backends and a foreign IPVS service (not ours) on one of them."""
    backends = []
    for index in (1, 2):
        ns = netns_factory(f"be{index}")
        veth_pair(host_ns, f"vbe{index}", ns, "eth0")
        host_ns.sh(f"ip addr add 10.200.{index}.1/24 dev vbe{index}; "
                   f"ip addr add fd00:200:{index}::1/64 dev vbe{index} nodad")
        ns.sh(f"ip addr add 10.200.{index}.2/24 dev eth0; "
              f"ip addr add fd00:200:{index}::2/64 dev eth0 nodad; "
              f"ip route add default via 10.200.{index}.1; "
              f"ip -6 route add default via fd00:200:{index}::1")
        backends.append(Backend(ns, index))
    host_ns.sh(f"ipvsadm -A -t {FOREIGN}:443 -s wlc; "
               f"ipvsadm -a -t {FOREIGN}:443 -r 10.200.1.2:443 -m -w 3; "
               f"ipvsadm -A -u {VIP}:9999 -s lc")   # in the service range, but not owned below
    host_ns.backends = backends
    yield host_ns
    for b in backends:
        b.close()


def foreign_state(node) -> list[str]:
    return [line for line in node.exec("ipvsadm -Sn").stdout.splitlines()
            if FOREIGN in line or ":9999" in line]


def service(*backends, protocol="TCP", vip=VIP, **kw) -> VirtualService:
    v6 = ":" in vip
    port, target = (PORT, BACKEND_PORT) if protocol == "TCP" else (DNS, BACKEND_DNS)
    return VirtualService(protocol, vip, port, destinations=tuple(
        Destination(b.addr6 if v6 else b.addr, target) for b in backends), **kw)


def request(node, vip=VIP) -> str:
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    client = node.socket(family, socket.SOCK_STREAM)
    client.settimeout(TIMEOUT)
    try:
        client.connect((vip, PORT))
        return read_line(client)
    finally:
        client.close()


def query_udp(node, vip=VIP) -> str:
    client = node.socket(socket.AF_INET, socket.SOCK_DGRAM)   # a fresh source port each time
    client.settimeout(TIMEOUT)
    try:
        client.sendto(b"?", (vip, DNS))
        return client.recvfrom(64)[0].decode()
    finally:
        client.close()


def real_servers(node, vip=VIP, port=PORT) -> dict[str, dict]:
    """``ipvsadm -Ln`` for one service: {real server: {forward, weight, active, inactive}}."""
    out = node.exec(f"ipvsadm -Ln -t {vip}:{port}").stdout
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == "->" and fields[1][0].isdigit():
            rows[fields[1]] = dict(forward=fields[2], weight=int(fields[3]),
                                   active=int(fields[4]), inactive=int(fields[5]))
    return rows


class NsThread:
    """One thread inside a namespace running the calls handed to it, so that each applier's
    netlink sockets are made and used on one thread."""

    def __init__(self, ns):
        self.calls: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=ns.call, args=(self._serve,), daemon=True)
        self.thread.start()

    def _serve(self):
        while (item := self.calls.get()) is not None:
            fn, args, answer = item
            try:
                answer.put((True, fn(*args)))
            except BaseException as e:  # handed back to the caller
                answer.put((False, e))

    def __call__(self, fn, *args):
        answer: queue.Queue = queue.Queue()
        self.calls.put((fn, args, answer))
        ok, value = answer.get(timeout=120)
        if not ok:
            raise value
        return value

    def stop(self):
        self.calls.put(None)
        self.thread.join(timeout=30)


@pytest.fixture
def appliers(node):
    """(sync VIPs, sync IPVS), both running in the node's namespace."""
    worker = NsThread(node)
    vips = worker(VIPApplier)
    ipvs = worker(IPVSApplier, owned)
    yield (lambda desired: worker(vips.sync, desired),
           lambda desired: worker(ipvs.sync, desired))
    worker(vips.close)
    worker(ipvs.close)
    worker.stop()


def test_vip_and_service_follow_the_desired_state(node, appliers):
    one, two = node.backends
    foreign = foreign_state(node)
    assert len(foreign) == 3, node.exec("ipvsadm -Sn").stdout
    sync_vips, sync_ipvs = appliers

    assert sync_vips([VIP]) == ["create kube-dummy-if", "set kube-dummy-if up",
                                "add 10.96.0.10/32 to kube-dummy-if"]
    assert sync_ipvs([service(one, two)])[0] == "add service TCP 10.96.0.10:80 rr"
    assert sync_vips([VIP]) == [] and sync_ipvs([service(one, two)]) == []
    assert f"inet {VIP}/32 scope link" in node.exec("ip addr show dev kube-dummy-if").stdout
    assert foreign_state(node) == foreign

    answers = [request(node) for _ in range(4)]
    assert collections.Counter(answers) == {"backend-1": 2, "backend-2": 2}, answers
    rows = real_servers(node)
    assert {r["forward"] for r in rows.values()} == {"Masq"}, rows
    # The two closed connections to backend-1, in TIME_WAIT.
    closed_to_one = 2
    wait_for(lambda: real_servers(node)[f"{one.addr}:{BACKEND_PORT}"]["inactive"] == 2,
             what="backend-1's two closed connections in ipvsadm -Ln")

    assert sync_ipvs([service(one)]) == [
        f"delete destination TCP 10.96.0.10:80 -> {two.addr}:{BACKEND_PORT}"]
    assert [request(node) for _ in range(3)] == ["backend-1"] * 3
    # The service was edited, not recreated: backend-1's entry still counts its connections
    # from before the change (a recreated one would start from 0).
    assert list(real_servers(node)) == [f"{one.addr}:{BACKEND_PORT}"]
    wait_for(lambda: real_servers(node)[f"{one.addr}:{BACKEND_PORT}"]["inactive"]
             == closed_to_one + 3, what="backend-1's five closed connections")
    assert foreign_state(node) == foreign

    assert sync_ipvs([]) == ["delete service TCP 10.96.0.10:80"]
    assert sync_vips([]) == ["delete 10.96.0.10/32 from kube-dummy-if"]
    assert sync_ipvs([]) == [] and sync_vips([]) == []
    assert foreign_state(node) == foreign
    assert VIP not in node.exec("ip addr show dev kube-dummy-if").stdout
    with pytest.raises(OSError):
        request(node)


def test_persistence_scheduler_edit_udp_ipv6_and_kernel_refusals(node, appliers):
    one, two = node.backends
    foreign = foreign_state(node)
    sync_vips, sync_ipvs = appliers
    sync_vips([VIP, VIP6])
    # IPv6 on a dummy (IFF_NOARP) skips duplicate address detection: usable at once.
    assert "tentative" not in node.exec("ip -6 addr show dev kube-dummy-if").stdout
    sticky = service(one, two, persistent=300)
    udp = service(one, two, protocol="UDP")
    v6 = service(one, two, vip=VIP6)
    assert sync_ipvs([sticky, udp, v6])[0] == "add service TCP 10.96.0.10:80 rr persistent 300s"
    assert sync_ipvs([sticky, udp, v6]) == []
    listing = node.exec("ipvsadm -Ln").stdout
    assert f"TCP  {VIP}:{PORT} rr persistent 300" in listing, listing
    assert f"TCP  [{VIP6}]:{PORT} rr" in listing and f"UDP  {VIP}:{DNS} rr" in listing, listing

    # ClientIP affinity: every connection from the node lands on one backend.
    assert len(set(request(node) for _ in range(4))) == 1
    # UDP: each new source port is a new IPVS connection; rr spreads them.
    assert collections.Counter(query_udp(node) for _ in range(4)) == {
        "backend-1": 2, "backend-2": 2}
    # IPv6 through the /128 VIP, round robin over both backends' IPv6 addresses.
    assert collections.Counter(request(node, VIP6) for _ in range(2)) == {
        "backend-1": 1, "backend-2": 1}

    # A scheduler change is an edit in place ('set'): the persistence templates and
    # connection counts of the service stay.
    before = real_servers(node)
    wrr = service(one, two, persistent=300, scheduler="wrr")
    assert sync_ipvs([wrr, udp, v6]) == [
        "set service TCP 10.96.0.10:80 wrr persistent 300s (was rr persistent 300s)"]
    assert f"TCP  {VIP}:{PORT} wrr persistent 300" in node.exec("ipvsadm -Ln").stdout
    after = real_servers(node)
    assert {k: v["inactive"] for k, v in after.items()} == {
        k: v["inactive"] for k, v in before.items()}, (before, after)

    # The kernel's refusals name the service: an unknown scheduler, a multicast backend.
    with pytest.raises(IPVSSyncError, match=r"TCP 10\.96\.0\.10:81: scheduler 'nosuch'"):
        sync_ipvs([wrr, udp, v6, VirtualService("TCP", VIP, 81, "nosuch")])
    with pytest.raises(IPVSSyncError, match=r"TCP 10\.96\.0\.10:82: cannot add destination "
                                            r"224\.0\.0\.5:80: .*unicast or local"):
        sync_ipvs([wrr, udp, v6, VirtualService(
            "TCP", VIP, 82, destinations=(Destination("224.0.0.5", 80),))])

    assert sync_ipvs([]) == ["delete service TCP 10.96.0.10:80",
                             "delete service TCP 10.96.0.10:82",
                             "delete service TCP [fd00:96::10]:80",
                             "delete service UDP 10.96.0.10:53"]
    assert [s for s in node.exec("ipvsadm -Sn").stdout.splitlines() if s] == foreign
    assert sync_vips([]) == ["delete 10.96.0.10/32 from kube-dummy-if",
                             "delete fd00:96::10/128 from kube-dummy-if"]
