"""Where the ``kube-router`` daemon joins each simulated node.

Each node will run ``kube-router --master=URL --hostname-override=NODE ...``
inside its namespace, and the harness will wait for every daemon to report
synced before probing. The daemon has no controllers yet and refuses to start,
so ``DAEMON_ENABLED`` is False and both hooks do nothing: no controller exists
yet, and nothing pretends otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

DAEMON_ENABLED = False   # flip once the daemon's controllers exist
HEALTH_PORT = 20244


def daemon_argv(bin_dir: str, master: str, node: str) -> list[str]:
    return [os.path.join(bin_dir, "kube-router"), f"--master={master}",
            f"--hostname-override={node}", "--run-router=true", "--run-firewall=true",
            "--run-service-proxy=true", f"--health-port={HEALTH_PORT}"]


def start_daemon(node, master: str, bin_dir: str | None = None,
                 log=print) -> subprocess.Popen | None:
    """Start kube-router for ``node`` in its namespace; None while no controller exists yet."""
    if not DAEMON_ENABLED:
        return None
    argv = daemon_argv(bin_dir or os.path.dirname(sys.executable), master, node.name)
    log(f"node {node.name}: starting {' '.join(argv[:3])} ...")
    return node.netns.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{HEALTH_PORT}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def daemons_synced(nodes, world) -> bool:
    """Whether every node's daemon answers /healthz from the world namespace (true while
    no daemon runs)."""
    if not DAEMON_ENABLED:
        return True
    return all(world.call(_healthy, node.address) for node in nodes)
