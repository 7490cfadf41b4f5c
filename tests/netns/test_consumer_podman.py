"""Our CNI plugins driven by a real consumer: podman 4 with its CNI backend.

``kube-router-cni install`` puts the launchers into a private bin dir,
``kube-router-cni generate`` writes the conflist, and podman (libcni) execs the
plugins exactly as it would on a node. podman runs with the private node
namespace as its network namespace, so the bridge, the veths and the hostPort
rules all land there; containers run busybox httpd from a local rootfs
(nothing is pulled).

    peer (192.168.60.2) --- eth0 [host_ns] kube-bridge (10.244.3.1/24) --- containers
                            192.168.60.1, .9                               10.244.3.x

podman hides plugin failures on DEL (``rm -f`` exits 0), so teardown is judged
by the plugins' own state: leases, links and iptables in the node namespace.
"""
from __future__ import annotations

import ipaddress
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

from conf import defaults
from helpers import podman as pm
from helpers.netns import run, veth_pair

MISSING = pm.missing_tools()
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} "
                       "(Debian podman runc busybox-static; `make setup` installs them)"),
    pytest.mark.timeout(60),
]

POD_CIDR = ipaddress.ip_network("10.244.3.0/24")
GATEWAY = "10.244.3.1"
NODE, NODE_B, PEER = "192.168.60.1", "192.168.60.9", "192.168.60.2"
NETWORK = "krt-podman"
BRIDGE = defaults.BRIDGE_NAME
HOST_PORT = 8080
LOOPBACK = "/usr/lib/cni/loopback"
HTTPD = ("/bin/httpd", "-f", "-p", "80", "-h", "/www")
TIMEOUT = 5


def kube_router_cni(*args) -> None:
    exe = pathlib.Path(sys.executable).parent / "kube-router-cni"
    env = {k: v for k, v in os.environ.items() if k != defaults.CONF_FILE_ENV}
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def node_root(tmp_path):
    """A node's CNI dirs under tmp: our launchers + loopback, and the generated conflist."""
    root = tmp_path / "node"
    if os.path.isfile(LOOPBACK):
        (root / "usr/lib/cni").mkdir(parents=True)
        shutil.copy2(LOOPBACK, root / "usr/lib/cni/loopback")
    kube_router_cni("install", "--root", root, "--no-config")
    kube_router_cni("generate", "--root", root, "--pod-cidr", POD_CIDR, "--mtu", 1500,
                    "--network-name", NETWORK, "--data-dir", tmp_path / "leases")
    return root


@pytest.fixture
def podman(host_ns, node_root):
    runtime = pm.Podman(host_ns, str(node_root / "opt/cni/bin"),
                        str(node_root / "etc/cni/net.d"))
    try:
        yield runtime
    finally:
        runtime.cleanup()
    assert not runtime.leftover_cgroups(), runtime.leftover_cgroups()
    assert not runtime.work.exists(), f"podman state left in {runtime.work}"


@pytest.fixture
def rootfs(tmp_path):
    return pm.build_busybox_rootfs(tmp_path / "rootfs")


@pytest.fixture
def peer(host_ns, netns_factory):
    """A machine on the node network, one veth away from the node."""
    ns = netns_factory("peer")
    veth_pair(host_ns, "eth0", ns, "eth0")
    host_ns.exec(["ip", "addr", "add", f"{NODE}/24", "dev", "eth0"])
    host_ns.exec(["ip", "addr", "add", f"{NODE_B}/24", "dev", "eth0"])
    ns.exec(["ip", "addr", "add", f"{PEER}/24", "dev", "eth0"])
    return ns


def http_get(ns, addr: str, port: int, path: str = "/") -> str:
    """The body of ``GET path`` sent from inside ``ns``; fails on anything but 200."""
    def go():
        with socket.create_connection((addr, port), timeout=TIMEOUT) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode()
    reply = ns.call(go)
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.") and " 200 " in head.splitlines()[0], reply
    return body


def wget_in(podman, name: str, url: str) -> str:
    """``wget`` run inside the container (busybox 1.35's ``wget -T`` segfaults: use timeout)."""
    out = podman.exec(name, "timeout", str(TIMEOUT), "wget", "-q", "-O-", url)
    assert out.returncode == 0, f"wget {url} from {name}: rc={out.returncode} {out.stderr}"
    return out.stdout


def pod_ip(info: dict) -> str:
    return info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]


def leases(data_dir: pathlib.Path) -> dict[str, str]:
    net = data_dir / NETWORK
    if not net.is_dir():
        return {}
    return {p.name: p.read_bytes().decode() for p in net.iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved_ip.")}


def rule_lines(ns) -> list[str]:
    """User chains and rules of every table, both families, without counters."""
    lines = []
    for save in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in ns.exec([save]).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A") or (line.startswith(":") and line.split()[1] == "-"):
                lines.append(f"{save} {table} {line.split(' [')[0]}")
    # portmap's localnet guard stays once route_localnet is set (test_localnet_guard.py)
    return sorted(line for line in lines if "KRT-LOCALNET-GUARD" not in line)


def links(ns) -> set[str]:
    out = ns.exec(["ip", "-o", "link", "show"]).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def test_container_gets_pod_address_and_is_served_everywhere(podman, rootfs, host_ns, peer,
                                                             tmp_path):
    info = podman.start("web", NETWORK, rootfs, *HTTPD, ports=(f"{HOST_PORT}:80",))
    ip = pod_ip(info)
    cid = podman.containers["web"]

    assert ipaddress.ip_address(ip) in POD_CIDR
    assert info["NetworkSettings"]["Networks"][NETWORK]["Gateway"] == GATEWAY
    assert leases(tmp_path / "leases") == {ip: f"{cid}\r\neth0"}
    inside = podman.exec("web", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {ip}/{POD_CIDR.prefixlen}" in inside

    # Direct from the node, no NAT on the way.
    assert http_get(host_ns, ip, 80) == pm.INDEX
    assert http_get(host_ns, ip, 80, "/cgi-bin/whoami") == GATEWAY
    # hostPort from the node network: DNAT only, the client's address survives.
    assert http_get(peer, NODE, HOST_PORT, "/cgi-bin/whoami") == PEER
    # hostPort from the node itself, by its address and by localhost.
    assert http_get(host_ns, NODE, HOST_PORT) == pm.INDEX
    assert http_get(host_ns, "127.0.0.1", HOST_PORT, "/cgi-bin/whoami") == GATEWAY
    # Hairpin: the container reaches its own hostPort; masqueraded, or the
    # reply would go straight back to itself and never match the connection.
    assert wget_in(podman, "web", f"http://{NODE}:{HOST_PORT}/") == pm.INDEX
    assert wget_in(podman, "web", f"http://{NODE}:{HOST_PORT}/cgi-bin/whoami") == GATEWAY

    # Everything happened in the node namespace, nothing in the machine's own.
    assert BRIDGE in links(host_ns)
    assert cid not in run(["iptables-save", "-t", "nat"]).stdout
    assert any(cid in line for line in rule_lines(host_ns))


def test_rm_leaves_no_lease_link_rule_or_netns(podman, rootfs, host_ns, peer, tmp_path):
    rules_before, links_before = rule_lines(host_ns), links(host_ns)
    info = podman.start("web", NETWORK, rootfs, *HTTPD, ports=(f"{HOST_PORT}:80",))
    cid, sandbox = podman.containers["web"], podman.sandboxes["web"]
    assert http_get(peer, NODE, HOST_PORT) == pm.INDEX
    # The state teardown must undo is really there.
    assert leases(tmp_path / "leases") == {pod_ip(info): f"{cid}\r\neth0"}
    assert rule_lines(host_ns) != rules_before
    assert links(host_ns) - links_before - {BRIDGE}, "no host-side veth"
    assert os.path.exists(sandbox) and podman.cache_file("web").exists()

    podman.remove("web")

    assert leases(tmp_path / "leases") == {}
    after = rule_lines(host_ns)
    assert [r for r in after if "HOSTPORT" in r or " KRT-" in r or cid in r] == []
    assert after == rules_before
    assert links(host_ns) - links_before == {BRIDGE}
    assert host_ns.exec(["ip", "-o", "link", "show", "master", BRIDGE]).stdout == ""
    assert not os.path.exists(sandbox)
    assert not podman.cache_file("web").exists()
    assert "web" not in podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    with pytest.raises(ConnectionRefusedError):
        http_get(peer, NODE, HOST_PORT)


def test_two_containers_get_distinct_addresses_and_reach_each_other(podman, rootfs, host_ns,
                                                                   tmp_path):
    ip1 = pod_ip(podman.start("web1", NETWORK, rootfs, *HTTPD))
    ip2 = pod_ip(podman.start("web2", NETWORK, rootfs, *HTTPD))

    assert ip1 != ip2
    assert {ipaddress.ip_address(ip1), ipaddress.ip_address(ip2)} <= set(POD_CIDR.hosts())
    assert leases(tmp_path / "leases") == {ip1: f"{podman.containers['web1']}\r\neth0",
                                           ip2: f"{podman.containers['web2']}\r\neth0"}
    # Across the bridge, unNATed: each sees the other's own address.
    assert wget_in(podman, "web1", f"http://{ip2}/cgi-bin/whoami") == ip1
    assert wget_in(podman, "web2", f"http://{ip1}/cgi-bin/whoami") == ip2
    assert wget_in(podman, "web1", f"http://{ip2}/") == pm.INDEX
    ports = host_ns.exec(["ip", "-o", "link", "show", "master", BRIDGE]).stdout
    assert len(ports.splitlines()) == 2


def test_stop_and_start_release_and_take_back_the_network(podman, rootfs, host_ns, peer,
                                                          tmp_path):
    first_ip = pod_ip(podman.start("web", NETWORK, rootfs, *HTTPD, ports=(f"{HOST_PORT}:80",)))
    first_sandbox = podman.sandboxes["web"]
    rules_running = rule_lines(host_ns)

    podman("stop", "-t", "0", "web")
    assert leases(tmp_path / "leases") == {}
    assert not os.path.exists(first_sandbox)
    assert [r for r in rule_lines(host_ns) if "HOSTPORT" in r or " KRT-" in r] == []
    assert host_ns.exec(["ip", "-o", "link", "show", "master", BRIDGE]).stdout == ""

    podman("start", "web")
    info = podman.inspect("web")
    podman.sandboxes["web"] = info["NetworkSettings"]["SandboxKey"]
    ip = pod_ip(info)
    assert leases(tmp_path / "leases") == {ip: f"{podman.containers['web']}\r\neth0"}
    # Same container ID, same chains; only the DNAT target follows the new lease.
    assert rule_lines(host_ns) == sorted(r.replace(first_ip, ip) for r in rules_running)
    assert http_get(peer, NODE, HOST_PORT, "/cgi-bin/whoami") == PEER
    assert wget_in(podman, "web", f"http://{NODE}:{HOST_PORT}/") == pm.INDEX


def test_host_ip_and_port_range_mappings(podman, rootfs, peer):
    # podman hands these to portmap as one portMappings entry per port, with hostIP.
    podman.start("web", NETWORK, rootfs, *HTTPD,
                 ports=(f"{NODE_B}:{HOST_PORT}:80", "8090-8091:80-81"))

    assert http_get(peer, NODE_B, HOST_PORT, "/cgi-bin/whoami") == PEER
    with pytest.raises(ConnectionRefusedError):
        http_get(peer, NODE, HOST_PORT)
    assert http_get(peer, NODE, 8090) == pm.INDEX
    # 8091 goes to the container's port 81, where nothing listens: the
    # container's refusal proves the mapping (unmapped, conmon would accept).
    with pytest.raises(ConnectionRefusedError):
        http_get(peer, NODE, 8091)
