"""HTTP: routing, discovery, REST verbs and chunked watch streams."""
from __future__ import annotations

import json
import logging
import urllib.parse
from http.server import BaseHTTPRequestHandler

from krsim.apiserver import discovery
from krsim.apiserver import errors as err
from krsim.apiserver.kinds import Resource, lookup
from krsim.apiserver.watch import DEFAULT_TIMEOUT, WatchRequest, stream_watch

log = logging.getLogger(__name__)


class Route:
    """A parsed resource path: /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]."""

    def __init__(self, res: Resource, namespace: str | None, name: str | None, sub: str | None):
        self.res, self.namespace, self.name, self.sub = res, namespace, name, sub


def parse_route(parts: list[str]) -> Route | None:
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        candidate = lookup(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    res = lookup(group, version, rest[0])
    if res is None or (res.namespaced is False and namespace is not None):
        return None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and (sub != "status" or not res.has_status):
        return None
    return Route(res, namespace, rest[1] if len(rest) >= 2 else None, sub)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, a keep-alive client's delayed
    # ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "kube-apiserver-sim"

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError as gone:     # reading the next request of a keep-alive client
            self._client_gone(gone)

    def _client_gone(self, gone: ConnectionError, during: str = "") -> None:
        # A client that hangs up (a watch it stops, a process that exits) is routine: one
        # line, not socketserver's traceback on stderr.
        host, port = self.client_address[:2]
        log.info("client %s:%s went away%s: %s", host, port, during, gone.strerror or gone)

    def _send_json(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, failure: err.ApiError) -> None:
        self._send_json(failure.code, failure.status())

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as bad:
            ctype = self.headers.get("Content-Type", "")
            if "yaml" in ctype or "protobuf" in ctype:
                raise err.unsupported_media_type(ctype) from None
            raise err.bad_request(f"the body could not be decoded as JSON: {bad}") from None

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        try:
            if self.command in ("GET", "HEAD") and self._serve_fixed(parts):
                return
            route = parse_route(parts)
            if route is None:
                raise err.path_not_found()
            self._serve_resource(route, query)
        except err.ApiError as failure:
            self._send_error(failure)
        except ConnectionError as gone:
            self.close_connection = True
            self._client_gone(gone, f" during {self.command} {self.path}")
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self._send_error(err.ApiError(500, "InternalError", "an error on the server "
                                                                "prevented the request from succeeding"))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- discovery and health --------------------------------------------------------------
    def _serve_fixed(self, parts: list[str]) -> bool:
        path = "/" + "/".join(parts)
        if path in ("/healthz", "/readyz", "/livez"):
            self._send_json(200, b"ok", "text/plain; charset=utf-8")
        elif path == "/version":
            self._send_json(200, discovery.VERSION)
        elif path == "/api":
            self._send_json(200, discovery.api_versions(f"{self.server.server_address[0]}:"
                                                        f"{self.server.server_address[1]}"))
        elif path == "/apis":
            self._send_json(200, discovery.api_group_list())
        elif path == "/openapi/v2":
            if "protobuf" in self.headers.get("Accept", ""):
                self._send_json(200, discovery.OPENAPI_V2_PROTOBUF,
                                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            else:
                self._send_json(200, discovery.OPENAPI_V2_JSON)
        elif len(parts) == 2 and parts[0] == "apis":
            group = discovery.api_group(parts[1])
            if group is None:
                raise err.path_not_found()
            self._send_json(200, group)
        elif parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            found = discovery.api_resource_list(group, version)
            if found is None:
                raise err.path_not_found()
            self._send_json(200, found)
        else:
            return False
        return True

    # -- resources -------------------------------------------------------------------------
    def _serve_resource(self, route: Route, query: dict) -> None:
        registry = self.server.registry
        res, ns, name = route.res, route.namespace, route.name
        verb = self.command
        if name is None:
            if verb in ("GET", "HEAD") and query.get("watch") in ("1", "true"):
                return self._watch(route, query)
            if verb in ("GET", "HEAD"):
                items, rv = registry.list(res, ns, query.get("labelSelector"),
                                          query.get("fieldSelector"))
                return self._send_json(200, {"kind": f"{res.kind}List",
                                             "apiVersion": res.api_version,
                                             "metadata": {"resourceVersion": str(rv)},
                                             "items": items})
            if verb == "POST":
                if res.namespaced and ns is None:
                    raise err.method_not_allowed("the server does not allow this method on the "
                                                 "requested resource")
                return self._send_json(201, registry.create(res, ns, self._read_body()))
            if verb == "DELETE":
                self._read_body()
                items, rv = registry.list(res, ns, query.get("labelSelector"),
                                          query.get("fieldSelector"))
                gone = [registry.delete(res, o["metadata"].get("namespace", ""),
                                        o["metadata"]["name"]) for o in items]
                return self._send_json(200, {"kind": f"{res.kind}List",
                                             "apiVersion": res.api_version,
                                             "metadata": {"resourceVersion": str(rv)},
                                             "items": gone})
            raise err.method_not_allowed("the server does not allow this method on the "
                                         "requested resource")
        ns = ns or ""
        if verb in ("GET", "HEAD"):
            return self._send_json(200, registry.get(res, ns, name))
        if verb == "PUT":
            return self._send_json(200, registry.update(res, ns, name, self._read_body(),
                                                        route.sub))
        if verb == "PATCH":
            ctype = self.headers.get("Content-Type", "")
            return self._send_json(200, registry.patch(res, ns, name, ctype, self._read_body(),
                                                       route.sub))
        if verb == "DELETE" and route.sub is None:
            self._read_body()
            return self._send_json(200, registry.delete(res, ns, name))
        raise err.method_not_allowed("the server does not allow this method on the requested "
                                     "resource")

    def _watch(self, route: Route, query: dict) -> None:
        timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        req = WatchRequest(route.res, route.namespace, query.get("labelSelector"),
                           query.get("fieldSelector"), query.get("resourceVersion"),
                           query.get("allowWatchBookmarks") in ("1", "true"), timeout)
        # Selectors are checked before the 200 goes out, so a bad one is an ordinary error.
        self.server.registry.list(route.res, route.namespace, req.label_selector,
                                  req.field_selector)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

        def send(event: dict) -> None:
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        with self.server.watch_streams:
            stream_watch(self.server.registry, req, send, self.server.bookmark_interval)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
