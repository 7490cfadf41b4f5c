"""The daemon against the embedded API server: every kind it watches, every change within a second.

Nothing here knows the server is not a real one: the daemon speaks to it over
HTTP through the official client, as it would to kube-apiserver.
"""
import threading
import time

from kubernetes import client

from proxyd import cli
from krsim.apiserver import ApiServer, ServerConfig
from proxyd.daemon import Daemon

KINDS = ("nodes", "namespaces", "pods", "services", "endpointslices", "networkpolicies")


class Watcher:
    name = "watcher"
    kinds = KINDS
    sync_period = 3600.0
    min_sync_interval = 0.0

    def __init__(self):
        self.seen: dict[tuple, float] = {}  # (kind, key, deleted) -> when first seen
        self.cond = threading.Condition()

    def sync(self, ctx):
        now = time.monotonic()
        with self.cond:
            for change in ctx.each_change():
                self.seen.setdefault((change.kind, change.key, change.current is None), now)
            self.cond.notify_all()

    def wait_for(self, what, timeout=1.0) -> float:
        start = time.monotonic()
        with self.cond:
            ok = self.cond.wait_for(lambda: what in self.seen, timeout)
        assert ok, f"{what} did not reach the controller within {timeout}s"
        return self.seen[what] - start


def test_every_change_reaches_the_controller_within_a_second():
    server = ApiServer(ServerConfig(bookmark_interval=0.5)).start()
    config, _ = cli.parse_args([f"--master={server.url}", "--hostname-override=node-a",
                                "--health-port=0", "--cache-sync-timeout=5s"])
    watcher = Watcher()
    daemon = Daemon(config, [watcher])
    api = client.ApiClient(client.Configuration(host=server.url))
    try:
        daemon.start()
        assert watcher.wait_for(("namespaces", "default", False), 5) is not None
        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        latencies = []

        def step(action, expected):
            t0 = time.monotonic()
            action()
            watcher.wait_for(expected, timeout=1.0)
            latencies.append(watcher.seen[expected] - t0)

        step(lambda: core.create_node({"metadata": {"name": "node-a"}}),
             ("nodes", "node-a", False))
        step(lambda: core.create_namespace({"metadata": {"name": "x"}}),
             ("namespaces", "x", False))
        step(lambda: core.create_namespaced_pod("x", {
            "metadata": {"name": "a", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}}),
            ("pods", "x/a", False))
        step(lambda: core.create_namespaced_service("x", {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            ("services", "x/web", False))
        slices = [k for (kind, k, _) in watcher.seen if kind == "endpointslices"
                  and k.startswith("x/web-")]
        deadline = time.monotonic() + 1.0
        while not slices and time.monotonic() < deadline:
            time.sleep(0.01)
            slices = [k for (kind, k, _) in list(watcher.seen) if kind == "endpointslices"
                      and k.startswith("x/web-")]
        assert slices, "the Service's EndpointSlice did not reach the controller within 1s"
        step(lambda: net.create_namespaced_network_policy("x", {
            "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}),
            ("networkpolicies", "x/deny", False))
        step(lambda: core.delete_namespaced_pod("a", "x"), ("pods", "x/a", True))
        print("latencies (s):", ["%.4f" % x for x in latencies])
        assert max(latencies) < 1.0, latencies
    finally:
        daemon.stop()
        api.close()
        server.stop()


def test_statusz_reports_the_resource_versions_each_sync_covered():
    """What the simulation waits on: after a write, a node is caught up once its controller's
    last successful sync covered the API server's newest write of every kind it reads."""
    import json
    import urllib.request

    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ApiServer(ServerConfig()).start()
    config, _ = cli.parse_args([f"--master={server.url}", "--hostname-override=node-a",
                                f"--health-port={port}", "--health-addr=127.0.0.1",
                                "--cache-sync-timeout=5s"])
    watcher = Watcher()
    watcher.kinds = ("namespaces", "pods")
    daemon = Daemon(config, [watcher])
    api = client.ApiClient(client.Configuration(host=server.url))
    try:
        daemon.start()
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "x"}})
        newest = server.store.last_write["namespaces"]

        def covered():
            status = json.loads(daemon.status()[2])["controllers"]["watcher"]
            return int(status["resource_versions"].get("namespaces") or 0)

        deadline = time.monotonic() + 2
        while covered() < newest and time.monotonic() < deadline:
            time.sleep(0.01)
        assert covered() >= newest
        assert ("namespaces", "x", False) in watcher.seen    # ...and the sync did see it
        # served on the health port next to /healthz
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/statusz", timeout=2) as r:
            body = json.load(r)["controllers"]["watcher"]
        assert body["last_sync"] is not None and int(body["resource_versions"]["pods"]) >= 0
    finally:
        daemon.stop()
        api.close()
        server.stop()

