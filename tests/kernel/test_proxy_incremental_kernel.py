"""The service proxy controller on a real kernel: a change writes only what it touches.

The node is ``host_ns`` with two backends behind veths. The controller runs
with its real appliers on one thread inside the node (a netlink socket
belongs to the namespace of the thread that opened it); every IPVS and VIP
request and every ipset/iptables command it makes is counted.
Requests to the ClusterIP prove where traffic goes after each step.
"""
from __future__ import annotations

import queue
import threading

import pytest

from helpers.netns import veth_pair
from helpers.proxy_objects import ProxyWorld, eps, service, READY
from helpers.traffic import read_line
from lowlevel import netns
from lowlevel.xtables import run_command
from proxyd import cli
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.ipvs import IPVSApplier
from proxyd.kernel.ipvs_netlink import IPVSNetlink, parse
from proxyd.kernel.vips import VIPApplier
from proxyd.proxy.controller import ServiceProxyController

VIP = "10.96.0.10"
TIMEOUT = 20
READS = {"dump", "get", "list", "save", "-L", "-t"}


class InNamespace:
    """One thread inside a namespace that runs what it is handed, in order."""

    def __init__(self, ns):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, args=(ns.path,), daemon=True)
        self._thread.start()

    def _serve(self, path):
        netns.enter(path)
        while (job := self._jobs.get()) is not None:
            fn, box = job
            try:
                box.put((True, fn()))
            except BaseException as e:      # handed back to the caller
                box.put((False, e))

    def __call__(self, fn):
        box: queue.Queue = queue.Queue()
        self._jobs.put((fn, box))
        ok, value = box.get(timeout=300)
        if not ok:
            raise value
        return value

    def stop(self):
        self._jobs.put(None)
        self._thread.join(timeout=10)


class Counted:
    """A pyroute2 IPRoute whose writing requests are recorded."""

    def __init__(self, inner, writes, methods):
        self._inner, self._writes, self._methods = inner, writes, methods

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr

        def call(command, *args, **kw):
            if command not in READS:
                self._writes.append(f"{name} {command}")
            return attr(command, *args, **kw)
        return call


class CountedIPVS(IPVSNetlink):
    """The applier's IPVS socket, recording every request it writes."""

    def __init__(self, writes):
        super().__init__()
        self._writes = writes

    def write(self, requests):
        self._writes += [" ".join(parse(r)[0]) for r in requests]
        return super().write(requests)


def controller(writes: list[str]) -> ServiceProxyController:
    """Made on the namespace's thread: every handle belongs to it."""
    from pyroute2 import IPRoute

    def run(argv, input=None):
        if argv[1] == "restore" or argv[0].endswith("restore"):
            writes.append(f"{argv[0]} restore")
        return run_command(argv, input)
    config, _ = cli.parse_args(["--run-service-proxy=true"])
    ctl = ServiceProxyController(
        config, "node-a", vips=VIPApplier(ipr=Counted(IPRoute(), writes, {"addr", "link"})),
        ipsets=IPSetApplier(names.is_service_set, run=run),
        tables={(4, t): TableApplier(4, t, names.is_service_chain, run=run)
                for t in ("nat", "filter")},
        addresses=lambda: ["172.30.0.10"])
    ctl.ipvs = IPVSApplier(lambda *key: ctl.ownership.owns(*key),
                           ipvs=CountedIPVS(writes))
    return ctl


class Backend:
    def __init__(self, ns, addr, name):
        self.sock = ns.socket()
        self.sock.bind((addr, 8080))
        self.sock.listen(8)
        self.name = name.encode()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name + b"\n")


@pytest.fixture
def node(host_ns, netns_factory):
    host_ns.exec("ip link add eth0 type dummy")
    host_ns.exec("ip addr add 172.30.0.10/24 dev eth0")
    host_ns.exec("ip link set eth0 up")
    backends = []
    for i in (1, 2):
        ns = netns_factory(f"be{i}")
        veth_pair(host_ns, f"vbe{i}", ns, "eth0")
        host_ns.exec(f"ip addr add 10.244.{i}.1/24 dev vbe{i}")
        ns.exec(f"ip addr add 10.244.{i}.2/24 dev eth0")
        ns.exec(f"ip route add default via 10.244.{i}.1")
        backends.append(Backend(ns, f"10.244.{i}.2", f"backend-{i}"))
    worker = InNamespace(host_ns)
    yield host_ns, worker
    worker.stop()
    for b in backends:
        b.sock.close()


def ask(node) -> str:
    client = node.socket()
    client.settimeout(TIMEOUT)
    try:
        client.connect((VIP, 80))
        return read_line(client)
    finally:
        client.close()


def web(backend: int):
    return eps("web", [(f"10.244.{backend}.2", "node-a", READY)])


def test_changes_write_their_delta_drift_waits_for_the_resync_restart_writes_nothing(node):
    ns, inside = node
    world = ProxyWorld(20)
    world.put("services", service("web", cluster_ip=VIP))
    world.put("endpointslices", web(1))
    writes: list[str] = []
    ctl = inside(lambda: controller(writes))

    inside(lambda: world.sync(ctl, full=True))
    assert writes and ask(ns) == "backend-1"

    writes.clear()
    inside(lambda: world.sync(ctl, world.put("endpointslices", web(2))))
    assert writes == ["dest del", "dest add"]
    assert ask(ns) == "backend-2"

    writes.clear()
    inside(lambda: world.sync(ctl, full=True))
    assert writes == [], "a resync with no drift wrote"

    ns.exec(f"ipvsadm -d -t {VIP}:80 -r 10.244.2.2:8080")                       # drift
    ns.exec(f"iptables -t nat -F {names.SERVICE_SNAT_CHAIN}")
    inside(lambda: world.sync(ctl, world.put("endpointslices", eps(
        "s5", [("10.244.0.40", "node-a", READY)]))))
    assert "10.244.2.2:8080" not in ns.exec(f"ipvsadm -Ln -t {VIP}:80").stdout
    assert f"-A {names.SERVICE_SNAT_CHAIN}" not in ns.exec("iptables-save -t nat").stdout

    writes.clear()
    inside(lambda: world.sync(ctl, full=True))
    assert "dest add" in writes and "iptables-restore restore" in writes
    assert ask(ns) == "backend-2"
    assert f"-A {names.SERVICE_SNAT_CHAIN}" in ns.exec("iptables-save -t nat").stdout

    restarted: list[str] = []
    inside(lambda: world.sync(controller(restarted), full=True))
    assert restarted == [], "a restarted proxy changed the kernel"
    assert ask(ns) == "backend-2"
