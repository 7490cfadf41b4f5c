"""Pod CIDRs from the Node object, read by the official client from a local HTTP server."""
from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from conf_helpers import fake_host


class NodeServer(http.server.ThreadingHTTPServer):
    """Serves GET /api/v1/nodes/NAME from a dict; records the paths asked for."""

    def __init__(self, nodes: dict):
        self.nodes, self.requests = nodes, []
        super().__init__(("127.0.0.1", 0), NodeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class NodeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        prefix = "/api/v1/nodes/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if name in self.server.nodes:
            self.reply(200, {"kind": "Node", "apiVersion": "v1", **self.server.nodes[name]})
        else:
            self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404,
                             "message": f'nodes "{name}" not found'})

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    servers = []

    def start(nodes):
        server = NodeServer(nodes)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def node(name, spec=None, annotations=None):
    return {name: {"metadata": {"name": name, "annotations": annotations or {}},
                   "spec": spec or {}}}


def cidrs_of(result):
    assert result.exit_code == 0, result.stderr
    return [r[0]["subnet"] for r in json.loads(result.stdout)["plugins"][0]["ipam"]["ranges"]]


SOURCES = {
    "podCIDRs": ({"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"], "podCIDR": "10.244.1.0/24"},
                 {}, ["10.244.1.0/24", "fd00:1::/64"]),
    "podCIDR fallback": ({"podCIDR": "10.244.2.0/24"}, {}, ["10.244.2.0/24"]),
    "annotation pod-cidr": ({"podCIDRs": ["10.244.1.0/24"]},
                            {"kube-router.io/pod-cidr": "10.50.0.0/24"}, ["10.50.0.0/24"]),
    "annotation pod-cidrs": ({"podCIDRs": ["10.244.1.0/24"]},
                             {"kube-router.io/pod-cidr": "10.50.0.0/24",
                              "kube-router.io/pod-cidrs": "10.60.0.0/24, fd00:60::/64"},
                             ["10.60.0.0/24", "fd00:60::/64"]),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_pod_cidrs_from_node(run_cli, api, case):
    spec, annotations, expected = SOURCES[case]
    server = api(node("node-a", spec, annotations))
    result = run_cli(["generate", "--dry-run", "--master", server.url, "--node-name", "node-a"])
    assert cidrs_of(result) == expected
    assert server.requests == ["/api/v1/nodes/node-a"]


def test_node_name_from_env_then_hostname(run_cli, api):
    server = api({**node("from-env", {"podCIDR": "10.1.0.0/24"}),
                  **node("from-hostname", {"podCIDR": "10.2.0.0/24"})})
    env_host = fake_host(environ={"NODE_NAME": "from-env"}, hostname="from-hostname")
    assert cidrs_of(run_cli(["generate", "--dry-run", "--master", server.url],
                            host=env_host)) == ["10.1.0.0/24"]
    assert cidrs_of(run_cli(["generate", "--dry-run", "--master", server.url],
                            host=fake_host(hostname="from-hostname"))) == ["10.2.0.0/24"]


def test_kubeconfig(run_cli, api, tmp_path):
    server = api(node("node-a", {"podCIDR": "10.3.0.0/24"}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server.url}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    result = run_cli(["generate", "--dry-run", "--kubeconfig", kubeconfig,
                      "--node-name", "node-a"])
    assert cidrs_of(result) == ["10.3.0.0/24"]


def test_show_names_the_node_field(run_cli, api):
    server = api(node("node-a", {"podCIDRs": ["10.4.0.0/24"]},
                      {"kube-router.io/pod-cidr": "10.5.0.0/24"}))
    result = run_cli(["show", "--master", server.url, "--node-name", "node-a"])
    line = next(l for l in result.stdout.splitlines() if l.startswith("pod_cidrs"))
    assert "10.5.0.0/24" in line and "annotation kube-router.io/pod-cidr" in line
    assert "node-a" in line


def test_no_pod_cidr_explains_the_controller_manager(run_cli, api):
    server = api(node("node-a", {}))
    result = run_cli(["generate", "--dry-run", "--master", server.url, "--node-name", "node-a"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    for words in ("node node-a has no pod CIDR",
                  "controller manager does not allocate node CIDRs",
                  "--allocate-node-cidrs=true", "--cluster-cidr",
                  "kube-router.io/pod-cidr", "--pod-cidr"):
        assert words in result.stderr


def test_unknown_node(run_cli, api):
    server = api({})
    result = run_cli(["generate", "--dry-run", "--master", server.url, "--node-name", "ghost"])
    assert result.exit_code == 1 and "node 'ghost' not found" in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_cidr_on_node_names_its_source(run_cli, api):
    server = api(node("node-a", {}, {"kube-router.io/pod-cidrs": "10.6.0.0/24,nonsense"}))
    result = run_cli(["generate", "--dry-run", "--master", server.url, "--node-name", "node-a"])
    assert result.exit_code == 1
    assert "pod CIDR 'nonsense' has no prefix length" in result.stderr
    assert "annotation kube-router.io/pod-cidrs" in result.stderr


def test_unreachable_api_server(run_cli):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli(["generate", "--dry-run", "--master", f"http://127.0.0.1:{port}",
                      "--node-name", "node-a"])
    assert result.exit_code == 1 and "cannot reach the API server" in result.stderr
    assert result.stderr.count("\n") == 1


def test_update_reads_the_node_too(run_cli, api, tmp_path):
    server = api(node("node-a", {"podCIDRs": ["10.7.0.0/24"]}))
    path = tmp_path / "k.conflist"
    path.write_text('{"cniVersion": "0.3.0", "name": "k", "plugins": '
                    '[{"type": "bridge", "ipam": {"type": "host-local"}}]}')
    result = run_cli(["update", path, "--master", server.url, "--node-name", "node-a"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == \
        [[{"subnet": "10.7.0.0/24"}]]
