"""Kernel settings the controllers need, written only when they differ."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)
ROOT = "/proc/sys"


def ensure_sysctl(key: str, value: str, root: str = ROOT) -> bool:
    """Set ``key`` ("net/ipv4/ip_forward") to ``value``; True if it had to change.

    The setting belongs to the network namespace the daemon runs in: on a node,
    the host's."""
    path = f"{root}/{key}"
    with open(path) as f:
        if f.read().strip() == value:
            return False
    with open(path, "w") as f:
        f.write(value)
    log.info("set %s = %s", key.replace("/", "."), value)
    return True
