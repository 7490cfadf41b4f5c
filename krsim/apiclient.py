"""Writes to the cluster's API server from the simulator's own process.

The API server listens in the world namespace, so every connection to it is
made by a worker thread that has entered that namespace (a socket stays in the
namespace it was created in; setns is per thread). Reads for controllers go
through informers; this is for applying manifests and writing pod status.
"""
from __future__ import annotations

import http.client
import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from lowlevel import netns

_PATHS = {  # kind -> (API prefix, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Service": ("/api/v1", "services", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
}


class ApiRequestError(Exception):
    def __init__(self, status: int, method: str, path: str, body: dict | str):
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


def object_path(kind: str, namespace: str = "", name: str = "", sub: str = "") -> str:
    if kind not in _PATHS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(_PATHS)}")
    prefix, plural, namespaced = _PATHS[kind]
    path = f"{prefix}/namespaces/{namespace or 'default'}/{plural}" if namespaced \
        else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    return path + (f"/{sub}" if sub else "")


class SimApi:
    def __init__(self, url: str, netns_path: str, timeout: float = 10.0):
        parsed = urllib.parse.urlsplit(url)
        self.url = url
        self._host, self._port, self._timeout = parsed.hostname, parsed.port, timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sim-api",
                                        initializer=netns.enter, initargs=(netns_path,))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def request(self, method: str, path: str, body=None,
                content_type: str = "application/json") -> dict:
        return self._pool.submit(self._request, method, path, body, content_type).result()

    def _request(self, method: str, path: str, body, content_type: str) -> dict:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, data, headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = raw.decode(errors="replace")
        if not 200 <= resp.status < 300:
            raise ApiRequestError(resp.status, method, path, answer)
        return answer

    # -- the few verbs the simulator needs -------------------------------------------------
    def ensure_object(self, obj: dict) -> dict:
        """Create ``obj``, or replace the object of that name (as ``kubectl apply`` would)."""
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "")
        try:
            return self.request("POST", object_path(obj["kind"], ns), obj)
        except ApiRequestError as exc:
            if exc.status != 409:
                raise
        path = object_path(obj["kind"], ns, meta["name"])
        current = self.request("GET", path)
        body = {**obj, "metadata": {**meta,
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.request("PUT", path, body)

    def delete(self, kind: str, namespace: str, name: str, missing_ok: bool = True) -> None:
        try:
            self.request("DELETE", object_path(kind, namespace, name))
        except ApiRequestError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    def get(self, kind: str, namespace: str, name: str) -> dict:
        return self.request("GET", object_path(kind, namespace, name))

    def list(self, kind: str) -> list[dict]:
        prefix, plural, _ = _PATHS[kind]
        return self.request("GET", f"{prefix}/{plural}").get("items") or []

    def patch_status(self, kind: str, namespace: str, name: str, status: dict) -> dict:
        return self.request("PATCH", object_path(kind, namespace, name, "status"),
                            {"status": status}, "application/merge-patch+json")
