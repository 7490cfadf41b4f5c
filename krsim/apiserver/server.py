"""Start and stop the server; the initial cluster state; ``python -m krsim.apiserver``."""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from krsim.apiserver.controllers import Controllers, ServiceAllocator
from krsim.apiserver.http import Handler
from krsim.apiserver.kinds import NAMESPACES, SERVICES
from krsim.apiserver.registry import Registry
from krsim.apiserver.store import Store

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    service_cidrs: tuple[str, ...] = ("10.96.0.0/12",)
    cluster_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    node_cidr_mask_v4: int = 24
    node_cidr_mask_v6: int = 64
    node_ports: tuple[int, int] = (30000, 32767)
    history: int = 1000
    bookmark_interval: float = 60.0
    secure_port: int = 6443


class _StreamCount:
    """Open watch streams, so shutdown can let each one write its final chunk."""

    def __init__(self):
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self):
        with self._idle:
            self._count += 1

    def __exit__(self, *exc):
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog of 5 refuses bursts of informers connecting at once.
    request_queue_size = 128

    def __init__(self, address, registry: Registry, bookmark_interval: float):
        self.registry = registry
        self.bookmark_interval = bookmark_interval
        self.watch_streams = _StreamCount()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ApiServer:
    def __init__(self, config: ServerConfig = ServerConfig()):
        self.config = config
        self.store = Store(history=config.history)
        masks = {4: config.node_cidr_mask_v4, 6: config.node_cidr_mask_v6}
        self.services = ServiceAllocator(list(config.service_cidrs), config.node_ports)
        self.registry = Registry(self.store, self.services,
                                 Controllers(list(config.cluster_cidrs), masks))
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._address = (config.host, config.port)
        self.ensure_bootstrap()

    def ensure_bootstrap(self) -> None:
        """What a fresh cluster has: the four namespaces and the ``kubernetes`` Service."""
        for name in DEFAULT_NAMESPACES:
            self.registry.create(NAMESPACES, "", {"metadata": {"name": name}})
        first = [self.services.ips[f].first() for f in self.services.families]
        self.registry.create(SERVICES, "default", {
            "metadata": {"name": "kubernetes",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": first[0], "clusterIPs": first,
                     "ipFamilyPolicy": "RequireDualStack" if len(first) > 1 else "SingleStack",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": self.config.secure_port}]}})

    @property
    def url(self) -> str:
        host, port = self._address      # known while stopped, for a restart on it
        return f"http://{host}:{port}"

    def start(self) -> "ApiServer":
        """Serve; a stopped server starts again on the same address with its objects and
        resourceVersions kept, as kube-apiserver restarting over the same etcd."""
        self.store.reopen()
        self._httpd = _HTTPServer(self._address, self.registry, self.config.bookmark_interval)
        self._address = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="apiserver",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch stream cleanly, then close the listener and open connections."""
        self.store.close()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.watch_streams.wait_idle(timeout=5)
        self._httpd.close_connections()
        self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="python -m krsim.apiserver",
                                     description="An in-memory Kubernetes API server.")
    parser.add_argument("--bind-address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--service-cluster-ip-range", default="10.96.0.0/12",
                        help="one CIDR, or two comma-separated (one per family) for dual-stack")
    parser.add_argument("--cluster-cidr", default="10.244.0.0/16",
                        help="pod CIDRs to carve node podCIDRs from; two for dual-stack")
    parser.add_argument("--node-cidr-mask-size-ipv4", type=int, default=24)
    parser.add_argument("--node-cidr-mask-size-ipv6", type=int, default=64)
    parser.add_argument("--service-node-port-range", default="30000-32767")
    parser.add_argument("--watch-cache-size", type=int, default=1000,
                        help="events kept for watches that resume from a resourceVersion")
    parser.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    low, _, high = args.service_node_port_range.partition("-")
    # INFO shows clients that went away; -v adds every request.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return ServerConfig(host=args.bind_address, port=args.port,
                        service_cidrs=tuple(args.service_cluster_ip_range.split(",")),
                        cluster_cidrs=tuple(c for c in args.cluster_cidr.split(",") if c),
                        node_cidr_mask_v4=args.node_cidr_mask_size_ipv4,
                        node_cidr_mask_v6=args.node_cidr_mask_size_ipv6,
                        node_ports=(int(low), int(high)), history=args.watch_cache_size,
                        bookmark_interval=args.bookmark_interval)


def main(argv: list[str] | None = None) -> int:
    server = ApiServer(parse_args(argv)).start()
    print(f"serving the Kubernetes API on {server.url}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0
