"""A tiny Kubernetes API server for the daemon's tests: list + chunked watch.

It speaks just enough of the protocol for the official client: collections at
fixed paths, a global resourceVersion, watch from a resourceVersion with
bookmarks and timeoutSeconds, "410 Expired" for versions compacted away, and
hooks to fail lists or cut watch connections the way a real outage does.
"""
from __future__ import annotations

import copy
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class FakeApiServer:
    def __init__(self, paths: list[str]):
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[str, dict]] = {p: {} for p in paths}
        self.events: list[tuple[int, str, str, dict]] = []   # (rv, path, type, obj)
        self.compacted_rv = 0
        self.fail_lists = 0
        self.list_times: list[float] = []
        self.watch_writes: list[tuple[float, str, str]] = []  # (time written, type, name)
        self.watch_requests: list[tuple[str, int]] = []       # (path, resourceVersion asked for)
        self._conns: set[socket.socket] = set()
        self._closing = False
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        with self.cond:
            self._closing = True
            self.cond.notify_all()
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- changing the world -------------------------------------------------
    def put(self, path: str, name: str, namespace: str | None = None, **fields) -> dict:
        with self.cond:
            self.rv += 1
            key = f"{namespace}/{name}" if namespace else name
            old = self.objects[path].get(key)
            meta = {"name": name, "resourceVersion": str(self.rv)}
            if namespace:
                meta["namespace"] = namespace
            meta.update(fields.pop("metadata", {}))
            obj = {"metadata": meta, **fields}
            self.objects[path][key] = obj
            self.events.append((self.rv, path, "MODIFIED" if old else "ADDED", obj))
            self.cond.notify_all()
            return obj

    def delete(self, path: str, key: str, silent: bool = False) -> None:
        """silent: no watch event, as if it happened during a gap the log no longer holds."""
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(self.objects[path].pop(key))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            if not silent:
                self.events.append((self.rv, path, "DELETED", obj))
            self.cond.notify_all()

    def bookmark(self, path: str) -> None:
        with self.cond:
            self.events.append((self.rv, path, "BOOKMARK", {"kind": "Bookmark", "metadata": {
                "resourceVersion": str(self.rv)}}))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event log: watches from any older resourceVersion get 410."""
        with self.cond:
            self.compacted_rv = self.rv
            self.cond.notify_all()

    def drop_watches(self) -> None:
        """Cut every watch connection mid-stream (no final chunk), like a crashed server."""
        with self.cond:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: FakeApiServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path not in self.api.objects:
            return self._send(404, {"kind": "Status", "code": 404, "message": "not found"})
        if query.get("watch") == "true":
            return self._watch(url.path, query)
        with self.api.cond:
            self.api.list_times.append(time.monotonic())
            if self.api.fail_lists:
                self.api.fail_lists -= 1
                return self._send(500, {"kind": "Status", "code": 500, "message": "injected"})
            items = [self.api.objects[url.path][k] for k in sorted(self.api.objects[url.path])]
            body = {"kind": "List", "metadata": {"resourceVersion": str(self.api.rv)}, "items": items}
        self._send(200, body)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, path: str, query: dict) -> None:
        # Go's net/http (kube-apiserver) sets TCP_NODELAY; without it Nagle holds an
        # event behind the unacknowledged headers for a delayed-ACK time (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        api, since = self.api, int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(query.get("timeoutSeconds", 300))
        bookmarks = query.get("allowWatchBookmarks") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api.cond:
            api.watch_requests.append((path, since))
            api._conns.add(self.connection)
            pos = len(api.events)
            while pos > 0 and api.events[pos - 1][0] > since:
                pos -= 1
            expired = since < api.compacted_rv
        try:
            if expired:
                self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                          "reason": "Expired", "message": "too old"}})
            while not expired and time.monotonic() < deadline:
                with api.cond:
                    while pos >= len(api.events) and not api._closing and time.monotonic() < deadline:
                        api.cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                    if api._closing or self.connection not in api._conns:
                        return
                    batch, pos = api.events[pos:], len(api.events)
                for _rv, p, type_, obj in batch:
                    if p == path and (type_ != "BOOKMARK" or bookmarks):
                        with api.cond:
                            api.watch_writes.append((time.monotonic(), type_, obj["metadata"].get("name", "")))
                        self._chunk({"type": type_, "object": obj})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        finally:
            with api.cond:
                api._conns.discard(self.connection)
        self.close_connection = True


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body), error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
