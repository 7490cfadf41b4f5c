"""Pod CIDRs from the Node object, the way the daemon reads them (lowlevel/apiobjects.py:
the ``kube-router.io/pod-cidrs`` annotation, ``kube-router.io/pod-cidr``, ``spec.podCIDRs``,
``spec.podCIDR``, the first one set).
"""
from __future__ import annotations

import dataclasses

from conf import defaults
from conf.errors import ConfError
from lowlevel import apiobjects

REQUEST_TIMEOUT = 10


@dataclasses.dataclass(frozen=True)
class ApiSource:
    """Where the API server is: a kubeconfig, a --master URL, or the pod's service account."""
    kubeconfig: str | None = None
    master: str | None = None
    in_cluster: bool = False

    def describe(self) -> str:
        if self.kubeconfig and self.master:
            return f"{self.master} (credentials from {self.kubeconfig})"
        return self.master or self.kubeconfig or "in-cluster service account"


def api_source(kubeconfig: str | None, master: str | None, environ) -> ApiSource | None:
    if kubeconfig or master:
        return ApiSource(kubeconfig=kubeconfig, master=master)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return ApiSource(in_cluster=True)
    return None


def no_pod_cidr_message(node_name: str) -> str:
    return (f"node {node_name} has no pod CIDR: the controller manager does not allocate node "
            "CIDRs. Start kube-controller-manager with --allocate-node-cidrs=true and "
            f"--cluster-cidr=<cluster CIDR>, or annotate the node with "
            f"{apiobjects.POD_CIDR_ANNOTATION}=<CIDR>, or pass --pod-cidr")


def pod_cidrs_from_node(node: dict) -> tuple[list[str], str]:
    """(CIDRs, which field they came from) of a Node in its JSON form; ([], "") if none."""
    cidrs, source = apiobjects.pod_cidrs(node)
    return list(cidrs), source


def _configuration(source: ApiSource):
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if source.kubeconfig:
            config.load_kube_config(config_file=source.kubeconfig, client_configuration=cfg,
                                    persist_config=False)
        elif source.in_cluster:
            config.load_incluster_config(client_configuration=cfg)
    except (OSError, config.ConfigException) as exc:
        raise ConfError(f"cannot load API server credentials from {source.describe()}: "
                        f"{exc}".replace("\n", " "), 2) from None
    if source.master:
        cfg.host = source.master.rstrip("/")
    # One try: a node that cannot reach its API server should hear so now.
    cfg.retries = False
    return cfg


def read_node(source: ApiSource, name: str) -> dict:
    """The Node object as JSON (camelCase keys), read with the official client."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    with client.ApiClient(_configuration(source)) as api:
        try:
            node = client.CoreV1Api(api).read_node(name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfError(f"node {name!r} not found at {source.describe()}: pass "
                                "--node-name (or NODE_NAME) with the node's name") from None
            raise ConfError(f"reading node {name!r} from {source.describe()} failed: "
                            f"HTTP {exc.status} {exc.reason}") from None
        except HTTPError as exc:
            raise ConfError(f"cannot reach the API server at {source.describe()}: "
                            f"{type(exc).__name__}") from None
        return api.sanitize_for_serialization(node)


def node_pod_cidrs(source: ApiSource, name: str) -> tuple[list[str], str]:
    cidrs, field = pod_cidrs_from_node(read_node(source, name))
    if not cidrs:
        raise ConfError(no_pod_cidr_message(name))
    return cidrs, f"{field} of node {name} ({source.describe()})"


def default_node_name(environ, hostname) -> tuple[str, str]:
    if environ.get("NODE_NAME"):
        return environ["NODE_NAME"], "env NODE_NAME"
    return hostname(), "hostname"


