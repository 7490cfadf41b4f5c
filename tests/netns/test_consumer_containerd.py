"""Our CNI plugins driven by containerd's CRI plugin: the code path kubelet uses.

A private containerd (own root, state, socket and CNI dirs, under a temp dir)
runs in the test's node namespace; a CRI v1 gRPC client asks it for a pod
sandbox with a hostPort, then a busybox httpd container in it. The conflist is
the one ``kube-router-cni generate`` writes, with the launchers ``kube-router-cni
install`` writes. The image is built here from the static busybox binary and
imported, so nothing is pulled.

Topology (all made by the test, removed after it):

    peer --------------- eth0 [host_ns] kube-bridge ------------ eth0 [pod: sandbox + httpd]
    192.168.61.2     192.168.61.1       10.244.31.1                  10.244.31.x
    fd61::2          fd61::1            fd44:31::1 (dual-stack test) fd44:31::x
                     containerd, shims

The pod's httpd serves /cgi-bin/whoami (the client address it saw) and
/cgi-bin/fetch (the pod fetches a URL itself), so NAT and hairpin are visible.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from helpers.cri import containerd as ctd
from helpers.cri import image, trace, wire
from helpers.cri.client import CriClient, compile_stubs
from helpers.netns import veth_pair, wait_for

POD_CIDR, POD_CIDR6 = "10.244.31.0/24", "fd44:31::/64"
GATEWAY, GATEWAY6 = "10.244.31.1", "fd44:31::1"
NODE, PEER = "192.168.61.1", "192.168.61.2"
NODE6, PEER6 = "fd61::1", "fd61::2"
HOST_PORT = 8080
IMAGE = "docker.io/library/krt-busybox:local"
# What containerd execs: the conflist's entries (the bridge runs kube-router-host-local
# in-process) and the reference loopback for "lo".
EXECUTED = ("kube-router-bridge", "kube-router-portmap", "loopback")
REFERENCE_LOOPBACK = "/usr/lib/cni/loopback"

pytestmark = [
    pytest.mark.skipif(bool(ctd.missing_tools()),
                       reason=f"needs {', '.join(ctd.missing_tools())} (Debian containerd runc "
                              "util-linux; `make setup` installs them)"),
    pytest.mark.skipif(not os.access(image.BUSYBOX, os.X_OK),
                       reason="needs the static busybox binary (Debian busybox-static)"),
    pytest.mark.timeout(120),
]


def kube_router_cni(*args) -> None:
    cmd = [sys.executable, "-c", "import sys; from conf.cli import main; sys.exit(main())",
           *map(str, args)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE_ROUTER_CNI")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def pod_cidrs() -> list[str]:
    return [POD_CIDR]


@pytest.fixture
def node_root(tmp_path, pod_cidrs):
    """A node root after ``kube-router-cni install`` + ``generate``, every call traced."""
    if not os.access(REFERENCE_LOOPBACK, os.X_OK):
        pytest.skip("needs the reference loopback plugin (Debian containernetworking-plugins): "
                    "containerd calls it for every sandbox")
    (tmp_path / "usr/lib/cni").mkdir(parents=True)
    shutil.copy(REFERENCE_LOOPBACK, tmp_path / "usr/lib/cni/loopback")
    kube_router_cni("install", "--root", tmp_path, "--no-config")
    cidr_args = [arg for cidr in pod_cidrs for arg in ("--pod-cidr", cidr)]
    kube_router_cni("generate", "--root", tmp_path, *cidr_args, "--mtu", "1500",
                    "--data-dir", tmp_path / "var/lib/cni/networks")
    trace.ensure_tracing(str(tmp_path / "opt/cni/bin"), str(tmp_path / "trace"))
    return tmp_path


@pytest.fixture
def containerd(node_root, host_ns):
    daemon = ctd.PrivateContainerd(host_ns, str(node_root / "opt/cni/bin"),
                                   str(node_root / "etc/cni/net.d"), IMAGE)
    try:
        daemon.start()
        daemon.import_image(image.build_oci_archive(IMAGE, ["/bin/sleep", "2147483647"]))
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def cri(containerd):
    client = CriClient(containerd.socket)
    yield client
    client.close()


@pytest.fixture
def peer(host_ns, netns_factory):
    """A machine on the node network, one veth away from the node."""
    ns = netns_factory("peer")
    veth_pair(host_ns, "eth0", ns, "eth0")
    host_ns.exec(["ip", "addr", "add", f"{NODE}/24", "dev", "eth0"])
    ns.exec(["ip", "addr", "add", f"{PEER}/24", "dev", "eth0"])
    host_ns.exec(["ip", "addr", "add", f"{NODE6}/64", "dev", "eth0", "nodad"])
    ns.exec(["ip", "addr", "add", f"{PEER6}/64", "dev", "eth0", "nodad"])
    return ns


def http_get(ns, host: str, port: int, path: str) -> str:
    """GET from inside ``ns``; the body, or an OSError."""
    def get():
        conn = http.client.HTTPConnection(host, port, timeout=3)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 200, f"GET {host}:{port}{path}: {resp.status} {body}"
            return body
        finally:
            conn.close()
    return ns.call(get)


def client_address(body: str) -> str:
    """REMOTE_ADDR as busybox httpd reports it: ``[::ffff:a.b.c.d]`` on its dual-stack socket."""
    addr = ipaddress.ip_address(body.strip().strip("[]"))
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def eventually_get(ns, host: str, port: int, path: str, timeout: float = 10) -> str:
    def attempt():
        try:
            return http_get(ns, host, port, path)
        except OSError:
            return None
    return wait_for(attempt, timeout=timeout, interval=0.1, what=f"GET {host}:{port}{path}")


def firewall(ns) -> list[str]:
    """Rules and user chains of ``ns`` (IPv4 and IPv6), one "tool table line" each.

    Built-in chains are left out: a table's first use instantiates them empty.
    """
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in ns.exec([tool]).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") or (line.startswith(":") and " - " in line):
                out.append(f"{tool} {table} {line.split(' [')[0]}")
    # portmap's localnet guard stays once route_localnet is set (test_localnet_guard.py)
    return sorted(line for line in out if "KRT-LOCALNET-GUARD" not in line)


def veths(ns) -> list[str]:
    out = ns.exec(["ip", "-j", "link", "show", "type", "veth"]).stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def test_our_cri_proto_matches_the_api_compiled_into_containerd():
    from google.protobuf import descriptor_pb2

    theirs = wire.embedded_descriptor(shutil.which("containerd"))
    if theirs is None:
        pytest.skip("this containerd binary carries no runtime.v1 descriptor to compare with")
    ours = descriptor_pb2.FileDescriptorProto()
    compile_stubs()[0].DESCRIPTOR.CopyToProto(ours)
    assert {m.name for m in ours.message_type} >= {"RunPodSandboxRequest", "PortMapping"}
    assert wire.wire_mismatches(ours, theirs) == []


def run_httpd_pod(cri, containerd, node_root, name: str, host_port: int = HOST_PORT):
    """RunPodSandbox with a hostPort, then a busybox httpd container in it."""
    config = cri.sandbox_config(name, uid=str(uuid.uuid4()), namespace="default",
                                port_mappings=[(host_port, 80, "tcp")],
                                log_directory=str(node_root / "pod-logs" / name),
                                cgroup_parent=containerd.cgroup_parent)
    sandbox_id = cri.run_pod_sandbox(config)
    container_id = cri.create_container(
        sandbox_id, config, "httpd", IMAGE, ["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
        log_path="httpd.log")
    cri.start_container(container_id)
    running = cri.pb.ContainerState.Value("CONTAINER_RUNNING")
    wait_for(lambda: cri.container_status(container_id).state == running, timeout=10,
             what=f"the httpd container of {name} to run")
    containerd.remember_tasks()
    assert {sandbox_id, container_id} <= containerd.task_ids
    # One shim per pod (containers join their sandbox's shim), socket named by hash.
    assert os.path.exists(containerd.shim_socket(sandbox_id))
    assert len(ctd.pods_left(containerd.cgroup_parent)) >= 2   # sandbox + httpd
    return sandbox_id, container_id


def remove_pod(cri, sandbox_id: str, container_id: str) -> None:
    """kubelet's order. containerd fails the Stop/Remove call when a CNI DEL fails."""
    cri.stop_container(container_id)
    cri.remove_container(container_id)
    cri.stop_pod_sandbox(sandbox_id)
    cri.remove_pod_sandbox(sandbox_id)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def node_state(host_ns, node_root) -> dict:
    """What pods leave on the node: leases, veths, our iptables rules and chains."""
    leases = node_root / "var/lib/cni/networks/kubernetes"
    ips = sorted(p.name for p in leases.iterdir() if is_address(p.name)) if leases.exists() else []
    return {"leases": ips, "veths": veths(host_ns), "firewall": firewall(host_ns)}


def pod_ip_of(cri, sandbox_id: str) -> str:
    status = cri.pod_sandbox_status(sandbox_id)
    assert status.state == cri.pb.PodSandboxState.Value("SANDBOX_READY")
    pod_ip = status.network.ip
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(POD_CIDR), status
    assert pod_ip != GATEWAY
    return pod_ip


def test_pod_from_cri_gets_an_address_serves_traffic_and_leaves_nothing(
        cri, containerd, node_root, host_ns, peer):
    before = node_state(host_ns, node_root)
    sandbox_id, container_id = run_httpd_pod(cri, containerd, node_root, "web")
    pod_ip = pod_ip_of(cri, sandbox_id)
    during = node_state(host_ns, node_root)
    assert during["leases"] == [pod_ip]
    lease = node_root / "var/lib/cni/networks/kubernetes" / pod_ip
    assert lease.read_text().split()[0] == sandbox_id
    assert len(during["veths"]) == len(before["veths"]) + 1
    assert during["firewall"] != before["firewall"]

    # node -> pod: the container's httpd over the bridge, no NAT on the way.
    assert eventually_get(host_ns, pod_ip, 80, "/") == image.INDEX_TEXT
    assert client_address(http_get(host_ns, pod_ip, 80, "/cgi-bin/whoami")) == GATEWAY
    # peer -> node:hostPort -> pod:80, DNAT only: the pod sees the peer's own address.
    assert client_address(eventually_get(peer, NODE, HOST_PORT, "/cgi-bin/whoami")) == PEER
    # the node itself through 127.0.0.1:hostPort (route_localnet + SNAT).
    assert http_get(host_ns, "127.0.0.1", HOST_PORT, "/") == image.INDEX_TEXT
    # hairpin: the pod reaches itself through its own hostPort; the reply only finds
    # its way back because the connection is masqueraded to the bridge address.
    seen = http_get(host_ns, pod_ip, 80, f"/cgi-bin/fetch?{NODE}:{HOST_PORT}/cgi-bin/whoami")
    assert client_address(seen) == GATEWAY

    cri.stop_container(container_id)
    cri.remove_container(container_id)
    cri.stop_pod_sandbox(sandbox_id)
    # The first DEL (netns + cached result) already took everything away...
    assert node_state(host_ns, node_root) == before
    cri.remove_pod_sandbox(sandbox_id)
    # ...and the second (no netns, no result) succeeded and changed nothing.
    assert node_state(host_ns, node_root) == before
    assert containerd.leaked_runtime_files() == set()
    assert ctd.pods_left(containerd.cgroup_parent) == set()

    calls = trace.read_calls(str(node_root / "trace"))
    assert [c for c in calls if c.rc != 0] == []
    check_add_calls(calls, sandbox_id, pod_ip)
    check_del_calls(calls, sandbox_id)


def check_add_calls(calls, sandbox_id: str, pod_ip: str) -> None:
    adds = [c for c in calls if c.command == "ADD"]
    assert sorted(c.plugin for c in adds) == sorted(EXECUTED)
    for call in adds:
        assert call.env["CNI_CONTAINERID"] == sandbox_id
        assert call.netns.startswith(("/var/run/netns/cni-", "/run/netns/cni-"))
        assert call.cni_args["K8S_POD_NAME"] == "web"
        assert call.cni_args["K8S_POD_NAMESPACE"] == "default"
        assert call.cni_args["K8S_POD_INFRA_CONTAINER_ID"] == sandbox_id
    portmap = next(c for c in adds if c.plugin == "kube-router-portmap")
    # containerd spells the keys the way Go marshals its struct: capitalised.
    assert portmap.stdin["runtimeConfig"]["portMappings"] == [
        {"HostPort": HOST_PORT, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]
    assert [ip["address"] for ip in portmap.stdin["prevResult"]["ips"]] == [f"{pod_ip}/24"]


def check_del_calls(calls, sandbox_id: str) -> None:
    for plugin in ("kube-router-bridge", "kube-router-portmap"):
        dels = [c for c in calls if c.command == "DEL" and c.plugin == plugin]
        # StopPodSandbox tears down with the netns and the cached result;
        # RemovePodSandbox stops again, the netns already gone: no netns, no result.
        assert [bool(c.netns) for c in dels] == [True, False], plugin
        assert [("prevResult" in c.stdin) for c in dels] == [True, False], plugin
        assert all(c.env["CNI_CONTAINERID"] == sandbox_id for c in dels)
        assert all(c.rc == 0 for c in dels), plugin


def test_pods_started_and_removed_in_parallel_get_distinct_addresses_and_ports(
        cri, containerd, node_root, host_ns, peer):
    """kubelet starts a node's pods concurrently: concurrent ADDs race to make the
    bridge, allocate from one lease directory and write the same iptables chains."""
    before = node_state(host_ns, node_root)
    names = [f"web{i}" for i in range(4)]
    ports = {name: HOST_PORT + 1 + i for i, name in enumerate(names)}
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        pods = dict(zip(names, pool.map(
            lambda n: run_httpd_pod(cri, containerd, node_root, n, ports[n]), names)))
    ips = {name: pod_ip_of(cri, sandbox_id) for name, (sandbox_id, _) in pods.items()}
    assert len(set(ips.values())) == len(names), ips
    assert node_state(host_ns, node_root)["leases"] == sorted(ips.values())

    for name in names:   # each hostPort reaches its own pod, seen from the peer
        body = eventually_get(peer, NODE, ports[name], "/cgi-bin/fetch?127.0.0.1:80/")
        assert body == image.INDEX_TEXT
        seen = eventually_get(peer, NODE, ports[name],
                              f"/cgi-bin/fetch?{ips[name]}:80/cgi-bin/whoami")
        # The pod fetched from its own address: the hostPort led to that very pod.
        assert client_address(seen) == ips[name], name

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda pod: remove_pod(cri, *pod), pods.values()))
    assert node_state(host_ns, node_root) == before
    assert containerd.leaked_runtime_files() == set()
    assert ctd.pods_left(containerd.cgroup_parent) == set()
    assert [c for c in trace.read_calls(str(node_root / "trace")) if c.rc != 0] == []


@pytest.mark.parametrize("pod_cidrs", [[POD_CIDR, POD_CIDR6]])
def test_dual_stack_pod_from_cri_reports_both_addresses_and_maps_both_families(
        cri, containerd, node_root, host_ns, peer):
    before = node_state(host_ns, node_root)
    sandbox_id, container_id = run_httpd_pod(cri, containerd, node_root, "web")
    status = cri.pod_sandbox_status(sandbox_id)
    pod_ip = status.network.ip
    extra = [ip.ip for ip in status.network.additional_ips]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(POD_CIDR), status
    assert len(extra) == 1 and ipaddress.ip_address(extra[0]) in ipaddress.ip_network(
        POD_CIDR6), status
    pod_ip6 = extra[0]
    assert node_state(host_ns, node_root)["leases"] == sorted([pod_ip, pod_ip6])

    # node -> pod over IPv6 on the bridge, then the hostPort from the peer in both families.
    assert client_address(eventually_get(host_ns, pod_ip6, 80, "/cgi-bin/whoami")) == GATEWAY6
    assert client_address(eventually_get(peer, NODE, HOST_PORT, "/cgi-bin/whoami")) == PEER
    assert client_address(eventually_get(peer, NODE6, HOST_PORT, "/cgi-bin/whoami")) == PEER6

    remove_pod(cri, sandbox_id, container_id)
    assert node_state(host_ns, node_root) == before
    assert containerd.leaked_runtime_files() == set()
    assert [c for c in trace.read_calls(str(node_root / "trace")) if c.rc != 0] == []
