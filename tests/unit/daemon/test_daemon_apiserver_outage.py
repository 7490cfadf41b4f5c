"""The daemon through an API server outage: the embedded server stops for OUTAGE seconds and
comes back on the same port with the same objects; the node must catch up at once.

Next to the daemon, a bare informer with the old behaviour (capped backoff only, no probe)
watches the same server: its catch-up time is printed as the comparison.
"""
import json
import socket
import threading
import time
import urllib.request

from kubernetes import client

from proxyd import cli
from krsim.apiserver import ApiServer, ServerConfig
from krsim.apiserver.kinds import NAMESPACES
from proxyd.daemon import Daemon
from proxyd.k8s.client import KINDS, KubeClient, build_configuration
from proxyd.k8s.informer import Informer

OUTAGE = 12.0
CATCH_UP = 1.5          # seconds from the server's return to the controller seeing a change


class CountingClient(KubeClient):
    """The daemon's own client, counting the list requests and probes it makes."""

    def __init__(self, configuration):
        super().__init__(configuration)
        self.lists: list[tuple[float, str]] = []
        self.probes: list[float] = []

    def list(self, kind, timeout=60.0):
        self.lists.append((time.monotonic(), kind.name))
        return super().list(kind, timeout)

    def probe(self, timeout=1.0):
        self.probes.append(time.monotonic())
        return super().probe(timeout)


class Namespaces:
    """A controller that records when each namespace change reached its sync."""
    name = "namespaces"
    kinds = tuple(KINDS)      # every informer the daemon can run goes through the outage
    sync_period = 3600.0
    min_sync_interval = 0.0

    def __init__(self):
        self.seen: dict[tuple[str, bool], float] = {}     # (name, deleted) -> first seen
        self.deleted_anything = False
        self.cond = threading.Condition()

    def sync(self, ctx):
        with self.cond:
            for change in ctx.each_change():
                self.deleted_anything |= change.current is None
                if change.kind == "namespaces":
                    self.seen.setdefault((change.key, change.current is None), time.monotonic())
            self.cond.notify_all()

    def wait_for(self, name, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: (name, False) in self.seen, timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def statusz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/statusz", timeout=2) as r:
        return json.load(r)["api_server"]


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pred()


def test_outage_caught_up_within_a_second_and_a_half_of_the_return():
    server = ApiServer(ServerConfig(bookmark_interval=0.5)).start()
    port = free_port()
    config, _ = cli.parse_args([f"--master={server.url}", "--hostname-override=node-a",
                                f"--health-port={port}", "--health-addr=127.0.0.1",
                                "--cache-sync-timeout=5s"])
    kube = CountingClient(build_configuration(master=server.url))
    ctl = Namespaces()
    daemon = Daemon(config, [ctl], client=kube)
    old_kube = KubeClient(build_configuration(master=server.url))
    old = Informer(old_kube, KINDS["namespaces"])         # the default Backoff(0.5, 30), no probe
    old_seen: dict[str, float] = {}
    old.add_handler(lambda _k, _o, new: new and old_seen.setdefault(new["metadata"]["name"],
                                                                    time.monotonic()))
    api = client.ApiClient(client.Configuration(host=server.url))
    try:
        daemon.start()
        old.start()
        assert ctl.wait_for("default", 5) and old.wait_for_sync(5)
        assert statusz(port) == {"reachable": True, "unreachable_since": None}
        sizes = {kind: len(inf.store) for kind, inf in daemon.informers.items()}

        down_wall, down = time.time(), time.monotonic()
        server.stop()
        assert wait_until(lambda: not daemon.api_server.status()["reachable"], 3)
        during = statusz(port)
        assert set(during) == {"reachable", "unreachable_since"}      # state and time only
        assert during["reachable"] is False
        assert down_wall <= during["unreachable_since"] <= time.time()
        # Written meanwhile through another API server of the same cluster.
        server.registry.create(NAMESPACES, "", {"metadata": {"name": "during"}})
        time.sleep(max(0.0, down + OUTAGE - time.monotonic()))
        assert {kind: len(inf.store) for kind, inf in daemon.informers.items()} == sizes
        assert json.loads(daemon.status()[2])["api_server"]["reachable"] is False

        server.start()
        up = time.monotonic()
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "after"}})
        assert ctl.wait_for("during", CATCH_UP + 1) and ctl.wait_for("after", CATCH_UP + 1)
        caught_up = max(ctl.seen[("during", False)], ctl.seen[("after", False)]) - up
        old_back = wait_until(lambda: "after" in old_seen, OUTAGE)
        print(f"\n{OUTAGE:g}s outage: caught up {caught_up:.2f}s after the server's return "
              "(backoff alone: " + (f"{old_seen['after'] - up:.2f}s)" if old_back else
                                    f"not within {OUTAGE:g}s)"))
        assert caught_up < CATCH_UP
        assert statusz(port) == {"reachable": True, "unreachable_since": None}

        lists = [name for t, name in kube.lists if down <= t < up]
        probes = [t for t in kube.probes if down <= t < up]
        print(f"during the outage: {len(lists)} list requests by {len(daemon.informers)} "
              f"informers, {len(probes)} probes")
        # Backoff 0.5, 1, 2, 4, 8 s (+20 % jitter): at most 5 tries each in 12 s, not 12.
        assert all(lists.count(kind.name) <= 5 for kind in KINDS.values()), lists
        assert OUTAGE * 0.6 <= len(probes) <= OUTAGE * 1.25, probes     # one a second, shared
        assert not ctl.deleted_anything        # nothing the node enforces went away
    finally:
        old.stop()
        daemon.stop()
        old_kube.close()
        api.close()
        server.stop()
