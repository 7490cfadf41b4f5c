"""kubectl against the server: get, create -f, label, delete for every kind served.

Uses each kubectl in $KRT_KUBECTL (colon-separated paths) or else the one on
PATH (Debian's kubernetes-client, kubectl 1.20). No --validate=false is
needed: /openapi/v2 answers with an empty OpenAPI document.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

KUBECTLS = [p for p in os.environ.get("KRT_KUBECTL", "").split(":") if p] or \
    [p for p in [shutil.which("kubectl")] if p]

MANIFESTS = {
    "namespace/team": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
    "node/node-1": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
    "pod/web": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "team", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    "service/web": {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": "team"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
    "networkpolicy.networking.k8s.io/deny": {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "team"}, "spec": {"podSelector": {}}},
    "endpointslice.discovery.k8s.io/manual": {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "manual", "namespace": "team"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.9"]}], "ports": [{"port": 80}]},
}


@pytest.fixture(params=KUBECTLS or [None])
def kubectl(request, apiserver, tmp_path):
    if request.param is None:
        pytest.skip("no kubectl: install Debian kubernetes-client (make setup does)")
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([request.param, "--server", apiserver.url, *args], input=stdin,
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)})
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    return run


def test_kubectl_create_get_label_delete(kubectl):
    for ref, manifest in MANIFESTS.items():
        out = kubectl("create", "-f", "-", stdin=yaml.safe_dump(manifest))
        assert out.strip() == f"{ref} created"
    for kind in ("pods", "po", "svc", "netpol", "endpointslices"):
        listed = kubectl("get", kind, "-n", "team", "-o", "name").split()
        assert listed, kind
    assert "node/node-1" in kubectl("get", "no", "-o", "name").split()
    assert "namespace/team" in kubectl("get", "ns", "-o", "name").split()
    svc = yaml.safe_load(kubectl("get", "svc", "web", "-n", "team", "-o", "yaml"))
    assert svc["spec"]["clusterIP"].startswith("10.")
    assert kubectl("label", "pod", "web", "-n", "team", "tier=fe").strip() == "pod/web labeled"
    assert kubectl("get", "po", "-n", "team", "-l", "tier=fe", "-o", "name").split() == \
        ["pod/web"]
    assert kubectl("get", "po", "-n", "team", "-l", "tier!=fe", "-o", "name").split() == []
    for ref in reversed(list(MANIFESTS)):
        namespace = [] if ref.startswith(("namespace/", "node/")) else ["-n", "team"]
        kubectl("delete", ref, *namespace, "--wait=false")
    assert kubectl("get", "pods", "-A", "-o", "name").split() == []
