"""The ``kube-router`` daemon on each simulated node.

Every node runs the real command, ``kube-router --master=URL
--hostname-override=NODE ...``, as a process inside its namespace, logging to
``<workdir>/<node>/kube-router.log``. After each step the harness asks every
daemon's ``/statusz`` which resourceVersions its controllers' last successful
sync covered, and waits until those reach the API server's newest write of
every kind the controller reads: then the kernel holds what the step asked for.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass

HEALTH_PORT = 20244
# The controllers the simulation runs, and what each reads from the API.
CONTROLLERS = {"firewall": ("pods", "namespaces", "networkpolicies"),
               "router": ("nodes", "services", "endpointslices")}
PROXY_KINDS = ("services", "endpointslices", "nodes")


def service_proxy_runs() -> bool:
    """The service proxy runs where this build has it and the kernel has IPVS (in the VM)."""
    from proxyd import config
    from krsim.vm import ipvs_available
    return config.PROXY in config.IMPLEMENTED and ipvs_available()


def controllers(service_proxy: bool) -> dict[str, tuple[str, ...]]:
    """The controllers every node runs, and the kinds each reads."""
    return {**CONTROLLERS, **({"service-proxy": PROXY_KINDS} if service_proxy else {})}
STOP_TIMEOUT = 10.0


class DaemonDied(RuntimeError):
    """A node's kube-router exited; the message carries the end of its log."""


@dataclass
class NodeDaemon:
    node: str
    process: subprocess.Popen
    log_path: str

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DaemonDied(f"kube-router on {self.node} exited with {self.process.returncode}:\n"
                             + self.log_tail())

    def stop(self) -> None:
        """SIGTERM, as systemd or the kubelet would; SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def daemon_argv(bin_dir: str, master: str, node: str, service_proxy: bool = False) -> list[str]:
    return [os.path.join(bin_dir, "kube-router"), f"--master={master}",
            f"--hostname-override={node}", "--run-firewall=true", "--run-router=true",
            f"--run-service-proxy={str(service_proxy).lower()}", f"--health-port={HEALTH_PORT}"]


def start_daemon(node, master: str, workdir: str, bin_dir: str | None = None,
                 log=print, service_proxy: bool = False) -> NodeDaemon:
    argv = daemon_argv(bin_dir or os.path.dirname(sys.executable), master, node.name,
                       service_proxy)
    log_path = os.path.join(workdir, node.name, "kube-router.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log(f"node {node.name}: {' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))}")
    # Each node's private runtime directory (gobgpd's API socket), as systemd would give it.
    env = {**os.environ, "RUNTIME_DIRECTORY": os.path.join(workdir, node.name, "run")}
    with open(log_path, "ab") as out:
        process = node.netns.popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    return NodeDaemon(node.name, process, log_path)


def _status(address: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{address}:{HEALTH_PORT}/statusz", timeout=1) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def lagging(status: dict | None, newest: dict[str, int],
            running: dict[str, tuple[str, ...]] = CONTROLLERS) -> list[str]:
    """What a daemon's /statusz has not caught up with yet (empty = synced)."""
    if status is None:
        return ["not answering /statusz yet"]
    behind = []
    for controller, kinds in running.items():
        seen = (status.get("controllers", {}).get(controller) or {}).get("resource_versions") or {}
        for kind in kinds:
            have = int(seen.get(kind) or -1)
            if have < newest.get(kind, 0):
                behind.append(f"{controller} has {kind} at {have} of {newest.get(kind, 0)}")
    return behind


def daemons_lagging(nodes, world, newest: dict[str, int],
                    running: dict[str, tuple[str, ...]] = CONTROLLERS) -> list[str]:
    """Per node, what its daemon still has to sync (empty when every node caught up)."""
    out = []
    for node in nodes:
        node.daemon.check_alive()
        behind = lagging(world.call(_status, node.address), newest, running)
        if behind:
            out.append(f"kube-router on {node.name}: " + ", ".join(behind))
    return out
