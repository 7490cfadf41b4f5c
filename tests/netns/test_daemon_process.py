"""The ``kube-router`` command as a process in a node namespace, against the embedded API server.

Start-up to a synced firewall, a change reaching the kernel, /healthz and
/statusz on the health port, and SIGTERM: a clean exit that leaves every
chain and set in place (traffic keeps its policy while the daemon restarts),
adopted as-is by the next start.
"""
import json
import os
import signal
import sys
import time
import urllib.request

import pytest

from krsim.apiserver import ApiServer, ServerConfig
from proxyd.kernel import names
from krsim.apiclient import SimApi
from krsim.vm import ipvs_available

KUBE_ROUTER = os.path.join(os.path.dirname(sys.executable), "kube-router")
HEALTH_PORT = 20244


def _get(node, path):
    def fetch():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HEALTH_PORT}{path}", timeout=1) as r:
                return r.status, r.read()
        except OSError:
            return None, b""
    return node.call(fetch)


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _chains(node):
    saved = node.exec("iptables-save -t filter").stdout
    return {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}


def _start(node, url, log, proxy="false"):
    return node.popen([KUBE_ROUTER, f"--master={url}", "--hostname-override=node-a",
                       "--run-firewall=true", "--run-router=false", f"--run-service-proxy={proxy}",
                       f"--health-port={HEALTH_PORT}", "--health-addr=127.0.0.1"],
                      stdout=log, stderr=log)


def test_start_sync_change_and_sigterm_leaves_the_kernel_as_it_is(netns_factory, tmp_path):
    node = netns_factory("node")
    node.exec("ip link set lo up")
    server = ApiServer(ServerConfig(host="127.0.0.1"))
    node.call(server.start)            # its socket lives in the node namespace
    api = SimApi(server.url, node.path)
    log = open(tmp_path / "kube-router.log", "wb")
    proc = None
    try:
        api.ensure_object({"kind": "Namespace", "metadata": {"name": "x"}})
        api.ensure_object({"kind": "Pod", "metadata": {"name": "a", "namespace": "x",
                                                       "labels": {"app": "web"}},
                           "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]}})
        api.patch_status("Pod", "x", "a", {"phase": "Running", "podIP": "10.244.0.2",
                                           "podIPs": [{"ip": "10.244.0.2"}]})
        proc = _start(node, server.url, log)
        _wait(lambda: _get(node, "/healthz")[0] == 200, what="/healthz 200")
        _wait(lambda: names.NETPOL_FORWARD in _chains(node), what="the top chains")
        # On every node it runs on, the daemon keeps its localnet guard first in raw PREROUTING.
        _wait(lambda: node.exec("iptables -t raw -S PREROUTING").stdout.splitlines()[1:2]
              == [f"-A PREROUTING -j {names.LOCALNET_GUARD_CHAIN}"], what="the localnet guard")
        pod_chain = names.pod_chain("x", "a", "ingress")
        assert pod_chain not in _chains(node)                  # nothing isolates x/a yet

        api.ensure_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "deny", "namespace": "x"},
                           "spec": {"podSelector": {}}})
        newest = server.store.last_write["networkpolicies"]
        _wait(lambda: int(json.loads(_get(node, "/statusz")[1] or b"{}").get("controllers", {})
                          .get("firewall", {}).get("resource_versions", {})
                          .get("networkpolicies") or 0) >= newest, what="/statusz to catch up")
        assert pod_chain in _chains(node)                      # ...and the kernel has it
        before = node.exec("iptables-save -t filter").stdout

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.flush()
        assert "kernel state is left in place" in (tmp_path / "kube-router.log").read_text()
        strip = lambda text: [l for l in text.splitlines() if not l.startswith("#")]  # noqa: E731
        assert strip(node.exec("iptables-save -t filter").stdout) == strip(before)

        # a restart adopts the state: after its first sync the rules are the same
        proc = _start(node, server.url, log)
        _wait(lambda: _get(node, "/statusz")[0] == 200 and json.loads(_get(node, "/statusz")[1])
              ["controllers"]["firewall"]["last_sync"], what="the restarted daemon's first sync")
        assert strip(node.exec("iptables-save -t filter").stdout) == strip(before)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        api.close()
        server.stop()


def test_without_ipvs_the_service_proxy_is_left_out_and_the_firewall_runs(netns_factory, tmp_path):
    if ipvs_available():
        pytest.skip("this kernel has IPVS (or can load ip_vs): the service proxy would run")
    node = netns_factory("node")
    node.exec("ip link set lo up")
    server = ApiServer(ServerConfig(host="127.0.0.1"))
    node.call(server.start)
    log_path = tmp_path / "kube-router.log"
    log = open(log_path, "wb")
    proc = None
    try:
        proc = _start(node, server.url, log, proxy="true")      # --run-service-proxy=true
        _wait(lambda: _get(node, "/statusz")[0] == 200 and json.loads(_get(node, "/statusz")[1])
              ["controllers"]["firewall"]["last_sync"], what="the firewall's first sync")
        assert set(json.loads(_get(node, "/statusz")[1])["controllers"]) == {"firewall",
                                                                        "localnet-guard"}
        assert names.NETPOL_FORWARD in _chains(node)
        time.sleep(1.5)                         # a sync that could only fail would retry by now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.flush()
        text = log_path.read_text()
        assert text.count("service-proxy not started") == 1, text
        assert "kernel module ip_vs" in text and "modprobe ip_vs" in text, text
        assert "--run-service-proxy=false" in text
        assert "Traceback" not in text
        assert "kube-router started on node node-a: firewall, localnet-guard\n" in text
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        server.stop()
