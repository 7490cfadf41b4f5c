"""Pod traffic across nodes rides out a kill -9 of kube-router, and of gobgpd alone.

A two-node simulated cluster (real kube-router on each node, pod routes learned
over BGP, graceful restart left at its default: off). From a pod on node-a to a
pod on node-b, while node-a's daemon is killed and restarted 3 s later, and
then while its gobgpd alone is killed: one TCP connection carries a message
every 50 ms (the longest wait for an echo is the stall), and a new connection
is opened every 100 ms (each must succeed within 1 s).
"""
from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from helpers.netns import wait_for
from krsim import daemon, harness
from krsim.cluster import Cluster

PORT = 9100
MANIFESTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
    *({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "x"},
       "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}
      for name, node in (("a", "node-a"), ("b", "node-b")))]


class Traffic:
    """Echo traffic from ``src`` to ``dst_ip`` (a listener in ``dst``), measured."""

    def __init__(self, src, dst, dst_ip: str):
        self.src, self.dst_ip = src, dst_ip
        self.server = dst.socket()
        self.server.bind(("0.0.0.0", PORT))
        self.server.listen(64)
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.new_connections = 0
        self.longest_stall = 0.0
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._serve, self._stream, self._connect_often)]
        for t in self.threads:
            t.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            try:
                while data := conn.recv(64):
                    conn.sendall(data)
            except OSError:
                pass

    def _stream(self):
        sock = self.src.socket()
        sock.settimeout(30)
        sock.connect((self.dst_ip, PORT))
        last = time.monotonic()
        with sock:
            while not self.stop.is_set():
                sock.sendall(b"m")
                if sock.recv(1) != b"m":
                    self.failures.append("the long connection closed")
                    return
                now = time.monotonic()
                self.longest_stall = max(self.longest_stall, now - last)
                last = now
                time.sleep(0.05)

    def _connect_often(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with self.src.socket() as sock:
                    sock.settimeout(1)
                    sock.connect((self.dst_ip, PORT))
                    sock.sendall(b"n")
                    assert sock.recv(1) == b"n"
                self.new_connections += 1
            except (OSError, AssertionError) as e:
                self.failures.append(f"new connection at {started:.1f}: {e!r}")
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def close(self):
        self.stop.set()
        self.server.close()
        for t in self.threads:
            t.join(5)


def log_count(node, text: str) -> int:
    with open(node.daemon.log_path, errors="replace") as f:
        return f.read().count(text)


def wait_peer_up_again(node, before: int) -> None:
    # gobgpd's own "Peer Up" line, in the daemon's log; then the hold's settle time.
    wait_for(lambda: log_count(node, "Peer Up") > before, timeout=60, interval=0.2,
             what=f"{node.name}'s new gobgpd session up")
    time.sleep(4)


def gobgpd_of(node) -> int:
    out = subprocess.run(["pgrep", "-P", str(node.daemon.process.pid), "gobgpd"],
                         capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


@pytest.mark.timeout(240)
def test_killing_the_daemon_or_gobgpd_cuts_no_pod_traffic():
    tmp_logs = set(glob.glob(os.path.join(tempfile.gettempdir(), "gobgpd-*")))
    with Cluster(["node-a", "node-b"], log=lambda line: None) as cluster:
        for obj in MANIFESTS:
            cluster.api.ensure_object(obj)
        harness.wait_settled(cluster, timeout=120)
        a, b = cluster.pods["x/a"], cluster.pods["x/b"]
        node = cluster.nodes["node-a"]
        traffic = Traffic(a.netns, b.netns, b.ips[0])
        try:
            time.sleep(1)
            # 1. kill -9 of kube-router; its gobgpd dies with it; restarted 3 s later.
            ups = log_count(node, "Peer Up")
            old_gobgpd = gobgpd_of(node)
            node.daemon.process.send_signal(signal.SIGKILL)
            node.daemon.process.wait(10)
            wait_for(lambda: not os.path.exists(f"/proc/{old_gobgpd}"), timeout=5,
                     what="gobgpd dying with its daemon")
            time.sleep(3)
            node.daemon = daemon.start_daemon(node, cluster.api_url, cluster.workdir,
                                              cluster.bin_dir, lambda line: None,
                                              cluster.service_proxy)
            wait_peer_up_again(node, ups)
            # 2. kill -9 of gobgpd alone: the daemon starts a new one.
            ups = log_count(node, "Peer Up")
            os.kill(gobgpd_of(node), signal.SIGKILL)
            wait_peer_up_again(node, ups)
            harness.wait_settled(cluster, timeout=60)
        finally:
            traffic.close()
        print(f"\n{traffic.new_connections} new connections, longest stall "
              f"{traffic.longest_stall:.2f} s")
        assert traffic.failures == []
        assert traffic.new_connections > 100
        assert traffic.longest_stall < 1.0
        assert cluster.missing_routes() == []
        # No gobgpd output file anywhere: it goes to the daemon's log.
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "gobgpd-*"))) == tmp_logs
        assert os.listdir(os.path.join(cluster.workdir, "node-a", "run")) == ["gobgp.sock"]
