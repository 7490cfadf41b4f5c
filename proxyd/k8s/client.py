"""Kubernetes API access through the official client, objects kept as plain dicts.

Where the credentials come from (kube-router's order): ``--kubeconfig`` (its
server replaced by ``--master`` when both are given), else ``--master`` alone
(no credentials), else the in-cluster service account.

Only ``ApiClient`` (auth, TLS, proxies, token refresh) is used; the generated
``CoreV1Api``-style classes are not: importing ``CoreV1Api`` alone costs ~0.6 s
(hundreds of pydantic models are built at import; ``import kubernetes`` itself
is ~0.3 s). Bodies are read with ``_preload_content=False`` semantics and kept
as the dicts ``json.loads`` returns: for a list of 1,000 small pods that is
~24 ms, against ~90 ms warm (~230 ms cold) to build ``V1PodList`` models and
~115 ms more to turn models back into dicts. Controllers read plain dicts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any, Iterator, Mapping

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME, InClusterConfigLoader)


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str          # "Pod"
    path: str          # the cluster-wide collection, "/api/v1/pods"
    namespaced: bool


KINDS = {
    "nodes": Kind("Node", "/api/v1/nodes", False),
    "namespaces": Kind("Namespace", "/api/v1/namespaces", False),
    "pods": Kind("Pod", "/api/v1/pods", True),
    "services": Kind("Service", "/api/v1/services", True),
    "endpointslices": Kind("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices", True),
    "networkpolicies": Kind("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies", True),
}


class ApiError(Exception):
    """An API request failed; ``status`` is the HTTP (or Status object) code, 0 if none."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class ConfigError(Exception):
    """No usable way to reach the API server."""


def build_configuration(kubeconfig: str = "", master: str = "",
                        environ: Mapping[str, str] = os.environ,
                        token_file: str = SERVICE_TOKEN_FILENAME,
                        cert_file: str = SERVICE_CERT_FILENAME) -> k8s_client.Configuration:
    conf = k8s_client.Configuration()
    if kubeconfig:
        try:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=conf,
                                        persist_config=False)
        except (OSError, k8s_config.ConfigException) as e:
            raise ConfigError(f"--kubeconfig {kubeconfig}: {e}") from e
    elif not master:
        try:
            InClusterConfigLoader(token_filename=token_file, cert_filename=cert_file,
                                  environ=environ).load_and_set(conf)
        except k8s_config.ConfigException as e:
            raise ConfigError(
                f"no --kubeconfig or --master given and not running in a cluster ({e})") from e
    if master:
        _override_host(conf, master.rstrip("/"))
    return conf


def _override_host(conf: k8s_client.Configuration, host: str) -> None:
    conf.host = host
    # The kubeconfig loader installs a token-refresh hook that runs before
    # every request and copies the kubeconfig's server back into the
    # configuration: without re-applying it, --master would last one request.
    hook = conf.refresh_api_key_hook
    if hook is not None:
        def refresh_keeping_master(c: k8s_client.Configuration) -> None:
            hook(c)
            c.host = host
        conf.refresh_api_key_hook = refresh_keeping_master


def resolve_node_name(hostname_override: str, environ: Mapping[str, str] = os.environ,
                      gethostname=socket.gethostname) -> str:
    """--hostname-override, else $NODE_NAME, else the host name (kube-router's order)."""
    return hostname_override or environ.get("NODE_NAME", "") or gethostname()


class KubeClient:
    """List and watch collections; every object is a dict straight from the JSON."""

    def __init__(self, configuration: k8s_client.Configuration):
        self._api = k8s_client.ApiClient(configuration)
        self._api.user_agent = "kube-router-py"

    def close(self) -> None:
        self._api.close()

    def list(self, kind: Kind, timeout: float = 60.0) -> tuple[list[dict], str]:
        """All objects of a kind and the list's resourceVersion."""
        body = json.loads(self._request(kind.path, [], timeout))
        return body.get("items") or [], body["metadata"]["resourceVersion"]

    def watch(self, kind: Kind, resource_version: str, timeout_seconds: int,
              read_timeout: float) -> "WatchStream":
        """Events after ``resource_version`` (bookmarks included) until the server ends the stream."""
        query = [("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
        return WatchStream(self._request(kind.path, query, (10.0, read_timeout), stream=True))

    def probe(self, timeout: float = 1.0) -> bool:
        """Whether the server answers: any response below 500 to GET /readyz (a 403 is an
        answer; a 5xx is a server that is not ready or a proxy with no server behind it)."""
        try:
            self._request("/readyz", [], timeout)
        except ApiError as e:
            return 0 < e.status < 500
        return True

    def _request(self, path: str, query: list, timeout: Any, stream: bool = False):
        method, url, headers, _, _ = self._api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        try:
            rest = self._api.call_api(method, url, headers, _request_timeout=timeout)
        except k8s_client.ApiException as e:
            raise ApiError(e.status or 0, str(e.reason)) from e
        except Exception as e:  # urllib3's connection and protocol errors
            raise ApiError(0, f"{type(e).__name__}: {e}") from e
        resp = rest.response
        if stream and 200 <= resp.status < 300:
            return resp
        try:
            data = resp.read()
        finally:
            resp.release_conn()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, data[:200].decode(errors="replace"))
        return data


class WatchStream:
    """The events of one watch request, one JSON object per line."""

    def __init__(self, response):
        self._resp = response

    def __iter__(self) -> Iterator[dict]:
        try:
            for line in self._resp:
                if line.strip():
                    yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError) as e:  # the connection broke mid-stream
            raise ApiError(0, f"{type(e).__name__}: {e}") from e
        finally:
            self._resp.release_conn()

    def abort(self) -> None:
        """Unblock a reader from another thread (stop)."""
        self._resp.shutdown()
