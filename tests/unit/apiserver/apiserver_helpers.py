"""Bodies the API server tests create."""
from __future__ import annotations


def pod_body(name: str, labels: dict | None = None, node: str | None = None,
             ports: list[dict] | None = None) -> dict:
    spec = {"containers": [{"name": "app", "image": "busybox", "ports": ports or []}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def ready_status(*ips: str, ready: bool = True) -> dict:
    return {"status": {"phase": "Running", "podIP": ips[0] if ips else None,
                       "podIPs": [{"ip": ip} for ip in ips],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def make_client(server) -> "client.ApiClient":
    from kubernetes import client
    config = client.Configuration()
    config.host = server.url
    return client.ApiClient(config)
