"""The node's 127.0.0.1 is out of pods' reach, although portmap sets route_localnet for
hostPorts on 127.0.0.1 (CVE-2020-8558): attacked with real packets, as a pod with NET_ADMIN
in its own namespace would."""
from __future__ import annotations

import json
import socket
import threading

from helpers.hostport import (GUARD, GW4, MAPPINGS, NODE4, PEER4, ask, guard_in_place,
                              node, portmap_conf, prev_result, run_plugin)  # noqa: F401
from proxyd.kernel.localnet import LocalnetGuard, cleanup_localnet_guard, desired_guard


def loopback_listener(ns, port: int):
    """A TCP listener on the node's 127.0.0.1 that answers "secret"; returns its socket."""
    sock = ns.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(8)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"secret")
    threading.Thread(target=serve, daemon=True).start()
    return sock


def pod_reaches(pod, port: int) -> bool:
    def go():
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", port))
                return s.recv(10) == b"secret"
            except OSError:
                return False
    return pod.call(go)


def test_a_pod_routing_127_0_0_1_via_its_gateway_cannot_reach_the_node_loopback(node):
    host_ns, peer, pod = node
    # Two of the node's loopback services: gobgpd's default API port and the health port.
    listeners = [loopback_listener(host_ns, port) for port in (50051, 20244)]
    try:
        conf = portmap_conf(MAPPINGS[0], prev=prev_result(pod))
        run_plugin(host_ns, "ADD", "ctrl", conf, pod.path)
        assert host_ns.exec("sysctl -n net.ipv4.conf.kbr0.route_localnet").stdout.strip() == "1"
        # What a pod with NET_ADMIN in its own namespace can do: drop its own loopback
        # and send 127.0.0.1 to the node, allowing loopback addresses on its eth0.
        pod.sh(f"""ip addr flush dev lo
                   ip route add 127.0.0.1/32 via {GW4} dev eth0
                   sysctl -qw net.ipv4.conf.eth0.route_localnet=1""")
        assert guard_in_place(host_ns)
        assert not pod_reaches(pod, 50051) and not pod_reaches(pod, 20244)
        # The four hostPort paths still answer, 127.0.0.1 on the node among them.
        assert ask(peer, "tcp", NODE4, 8080) == f"tcp {PEER4}"
        assert ask(host_ns, "tcp", NODE4, 8080) == f"tcp {NODE4}"
        assert ask(host_ns, "tcp", "127.0.0.1", 8080) == f"tcp {GW4}"
        assert ask(pod, "tcp", NODE4, 8080) == f"tcp {GW4}"

        # Without the guard the same pod gets through: it is the guard that holds.
        host_ns.exec(f"iptables -t raw -D PREROUTING -j {GUARD}")
        assert pod_reaches(pod, 50051)
        proc = run_plugin(host_ns, "CHECK", "ctrl", conf, pod.path, check=False)
        assert proc.returncode == 1 and GUARD in json.loads(proc.stdout)["details"]
        # A rule ahead of it in raw PREROUTING (an ACCEPT) would bypass it: the next ADD
        # puts the guard first again.
        host_ns.exec(f"iptables -t raw -I PREROUTING 1 -j ACCEPT")
        host_ns.exec(f"iptables -t raw -A PREROUTING -j {GUARD}")
        assert pod_reaches(pod, 50051)
        run_plugin(host_ns, "ADD", "ctrm", portmap_conf(MAPPINGS[1], prev=prev_result(pod)),
                   pod.path)
        saved = host_ns.exec("iptables-save -t raw").stdout
        assert saved.index(f"-A PREROUTING -j {GUARD}") < saved.index("-A PREROUTING -j ACCEPT")
        assert saved.count(f"-A PREROUTING -j {GUARD}") == 1
        assert not pod_reaches(pod, 50051)
        run_plugin(host_ns, "CHECK", "ctrl", conf, pod.path)
        run_plugin(host_ns, "DEL", "ctrm", conf)
        run_plugin(host_ns, "DEL", "ctrl", conf)
        assert guard_in_place(host_ns) and not pod_reaches(pod, 20244)
    finally:
        for sock in listeners:
            sock.close()


def raw_prerouting(ns) -> list[str]:
    return [line for line in ns.exec("iptables-save -t raw").stdout.splitlines()
            if line.startswith("-A PREROUTING")]


def test_the_daemons_guard_alone_closes_the_hole_and_lives_beside_the_plugins(node):
    host_ns, _, pod = node
    listener = loopback_listener(host_ns, 50051)
    try:
        # route_localnet set by something else than our plugin: no plugin guard here.
        host_ns.exec("sysctl -qw net.ipv4.conf.kbr0.route_localnet=1")
        pod.sh(f"""ip addr flush dev lo
                   ip route add 127.0.0.1/32 via {GW4} dev eth0
                   sysctl -qw net.ipv4.conf.eth0.route_localnet=1""")
        assert pod_reaches(pod, 50051)                    # the hole, open
        guard = LocalnetGuard()
        host_ns.call(guard.sync, None)
        assert not pod_reaches(pod, 50051)
        assert raw_prerouting(host_ns) == ["-A PREROUTING -j KUBE-ROUTER-LOCALNET"]

        # The plugin adds its own guard; after one round each finds its jump where it wants
        # it (the daemon's first) and neither writes again.
        conf = portmap_conf(MAPPINGS[0], prev=prev_result(pod))
        run_plugin(host_ns, "ADD", "ctrd", conf, pod.path)
        host_ns.call(guard.sync, None)
        settled = raw_prerouting(host_ns)
        assert settled == ["-A PREROUTING -j KUBE-ROUTER-LOCALNET", f"-A PREROUTING -j {GUARD}"]
        assert host_ns.call(guard.applier.apply, *desired_guard()) == 0
        run_plugin(host_ns, "ADD", "ctre", portmap_conf(MAPPINGS[1], prev=prev_result(pod)),
                   pod.path)
        assert raw_prerouting(host_ns) == settled

        # kube-router --cleanup-config removes the daemon's guard only: the plugin's holds.
        assert host_ns.call(cleanup_localnet_guard) == ["iptables -t raw KUBE-ROUTER-LOCALNET",
                                                        "iptables -t raw PREROUTING"]
        assert raw_prerouting(host_ns) == [f"-A PREROUTING -j {GUARD}"]
        assert not pod_reaches(pod, 50051)
        run_plugin(host_ns, "DEL", "ctre", conf)
        run_plugin(host_ns, "DEL", "ctrd", conf)
    finally:
        listener.close()
