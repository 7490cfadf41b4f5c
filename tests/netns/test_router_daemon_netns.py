"""The kube-router process's BGP router against an external router (bird2), end to end.

node (kube-router + its gobgpd, the embedded API server on 127.0.0.1) -- peer
(bird, AS 65001, given by --peer-router-ips/--peer-router-asns), and a pod
behind the node. bird must learn the node's pod CIDR from the Node object and
carry a TCP connection to the pod over it, and a Service's ClusterIP
(--advertise-cluster-ip); the node must learn bird's prefix as a protocol-17
route. SIGTERM ends gobgpd with the daemon and leaves the
learned route in the kernel.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers.netns import veth_pair, wait_for
from helpers.traffic import tcp_exchange
from krsim.apiserver import ApiServer, ServerConfig
from proxyd.kernel import names
from krsim.apiclient import SimApi

KUBE_ROUTER = os.path.join(os.path.dirname(sys.executable), "kube-router")
BIRD_CONF = """\
router id 10.0.1.3;
protocol device { scan time 1; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
protocol static { ipv4; route 10.245.0.0/24 blackhole; }
protocol bgp node {
    local 10.0.1.3 as 65001;
    neighbor 10.0.1.1 as 64512;
    connect delay time 1;
    ipv4 { import all; export where source = RTS_STATIC; };
}
"""


@pytest.mark.timeout(120)
def _topology(netns_factory):
    node, peer, pod = netns_factory("rt-node"), netns_factory("rt-bird"), netns_factory("rt-pod")
    veth_pair(node, "eth0", peer, "eth0")
    veth_pair(pod, "eth0", node, "podveth")
    node.sh("ip link set lo up && ip addr add 10.0.1.1/24 dev eth0 && "
            "ip addr add 10.244.0.1/24 dev podveth")
    peer.sh("ip link set lo up && ip addr add 10.0.1.3/24 dev eth0")
    pod.sh("ip addr add 10.244.0.2/24 dev eth0 && ip route add default via 10.244.0.1")
    return node, peer, pod


def _explain(tmp_path, peer, bird) -> None:
    print((tmp_path / "kube-router.log").read_text()[-3000:])
    print(peer.exec(["birdc", "-s", str(tmp_path / "bird.ctl"), "show", "protocols", "all",
                     "node"], check=False).stdout[-2000:])
    if bird.poll() is not None:
        print("bird exited", bird.returncode, bird.stderr.read()[-1000:])


def assert_api_only_on_the_unix_socket(node, rundir):
    """gobgpd's API is the root-only unix socket, on no TCP port: it listens for BGP only."""
    assert oct(rundir.stat().st_mode & 0o777) == "0o700"
    assert (rundir / "gobgp.sock").is_socket()
    listening = node.exec("ss -Hltnp").stdout
    ports = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines()
             if '"gobgpd"' in line}
    assert ports == {"179"}, listening


def test_external_peer_learns_the_pod_cidr_and_we_learn_its_prefix(netns_factory, tmp_path):
    if not shutil.which("bird"):
        pytest.skip("needs Debian's bird2 (make setup installs it)")
    node, peer, pod = _topology(netns_factory)
    server = ApiServer(ServerConfig(host="127.0.0.1"))
    node.call(server.start)
    api = SimApi(server.url, node.path)
    api.ensure_object({"kind": "Node", "metadata": {"name": "node-a"},
                       "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}})
    api.patch_status("Node", "", "node-a", {"addresses": [{"type": "InternalIP",
                                                           "address": "10.0.1.1"}]})
    api.ensure_object({"kind": "Namespace", "metadata": {"name": "x"}})
    api.ensure_object({"kind": "Service", "metadata": {"name": "web", "namespace": "x"},
                       "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}})
    (tmp_path / "bird.conf").write_text(BIRD_CONF)
    log = open(tmp_path / "kube-router.log", "wb")
    daemon = bird = None
    try:
        bird = peer.popen(["bird", "-f", "-c", str(tmp_path / "bird.conf"),
                           "-s", str(tmp_path / "bird.ctl")])
        daemon = node.popen([KUBE_ROUTER, f"--master={server.url}", "--hostname-override=node-a",
                             "--run-firewall=false", "--run-service-proxy=false",
                             "--run-router=true", "--peer-router-ips=10.0.1.3",
                             "--peer-router-asns=65001", "--advertise-cluster-ip",
                             "--health-port=0"],
                            stdout=log, stderr=log,
                            env={**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")})
        t0 = time.monotonic()
        route = wait_for(lambda: peer.exec("ip route show 10.244.0.0/24").stdout, timeout=60,
                         what="bird learning the node's pod CIDR")
        print(f"\nbird had the pod CIDR {time.monotonic() - t0:.1f} s after kube-router started")
        assert "via 10.0.1.1" in route and "proto bird" in route
        vip = wait_for(lambda: peer.exec("ip route show 10.96.0.10").stdout, timeout=10,
                       what="bird learning the Service's ClusterIP (--advertise-cluster-ip)")
        assert "via 10.0.1.1" in vip
        learned = wait_for(lambda: node.exec(f"ip route show proto {names.ROUTE_PROTOCOL}").stdout,
                           timeout=30, what="kube-router installing bird's prefix")
        assert learned.split() == ["10.245.0.0/24", "via", "10.0.1.3", "dev", "eth0"]
        assert tcp_exchange(peer, pod, "10.244.0.2", 8200) == "10.0.1.3"   # over the BGP route
        assert_api_only_on_the_unix_socket(node, tmp_path / "run")

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        # asked from outside: a command run inside the namespace would list itself
        pids = lambda: subprocess.run(["ip", "netns", "pids", node.name], capture_output=True,  # noqa: E731
                                      text=True).stdout.split()
        wait_for(lambda: not pids(), timeout=10, what="gobgpd ending with kube-router")
        assert "10.245.0.0/24" in node.exec(f"ip route show proto {names.ROUTE_PROTOCOL}").stdout
    except AssertionError:
        log.flush()
        _explain(tmp_path, peer, bird)
        raise
    finally:
        for proc in (daemon, bird):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
        api.close()
        server.stop()
