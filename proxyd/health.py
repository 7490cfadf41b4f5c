"""/healthz: 200 "ok" while every enabled controller's heartbeat is fresh.

kube-router's rule: a controller whose last successful sync is older than its
sync period plus a margin is stuck, and the whole node reports unhealthy (500,
naming it). Until a controller's first sync, the daemon's start time counts as
its heartbeat, so start-up is not reported as a failure.

``HTTPEndpoint`` is the small threaded server both /healthz and /metrics use.
"""
from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
import time
from typing import Callable, Mapping

Route = Callable[[], tuple[int, str, bytes]]      # -> (status, content type, body)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    controller: str
    period: float                         # the controller's sync period, seconds
    last: Callable[[], float | None]      # wall time of its last successful sync


class HealthCheck:
    def __init__(self, heartbeats: list[Heartbeat], *, margin: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self._beats, self._margin, self._clock = heartbeats, margin, clock
        self.started = clock()

    def stale(self) -> list[str]:
        now, out = self._clock(), []
        for beat in self._beats:
            last = beat.last() or self.started
            if now - last > beat.period + self._margin:
                out.append(f"{beat.controller}: last sync {now - last:.0f}s ago "
                           f"(sync period {beat.period:g}s)")
        return out

    def respond(self) -> tuple[int, str, bytes]:
        stale = self.stale()
        if stale:
            return 500, "text/plain", ("unhealthy: " + "; ".join(stale) + "\n").encode()
        return 200, "text/plain", b"ok\n"


class HTTPEndpoint:
    """A threaded HTTP server answering GET on a few fixed paths."""

    def __init__(self, addr: str, port: int, routes: Mapping[str, Route]):
        routes = dict(routes)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                route = routes.get(self.path.split("?", 1)[0])
                status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server_class = http.server.ThreadingHTTPServer
        if ":" in addr:
            server_class = type("V6Server", (server_class,), {"address_family": socket.AF_INET6})
        self._server = server_class((addr, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"http-{self.port}",
                                        daemon=True)

    def start(self) -> "HTTPEndpoint":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
