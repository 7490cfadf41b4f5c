"""Kernel settings (/proc/sys) of the calling thread's network namespace.

/proc/sys/net resolves against the namespace of the thread that *opens* the
file, so a plugin inside a pod's namespace (lowlevel/netns.py ``entered``)
writes the pod's settings. Keys are given as ``net.ipv4.ip_forward`` or, when
a part (an interface name) may hold dots, ``net/ipv6/conf/eth0/disable_ipv6``.
"""
from __future__ import annotations

ROOT = "/proc/sys"


def path(key: str, root: str = ROOT) -> str:
    return f"{root}/" + (key if "/" in key else key.replace(".", "/"))


def write(key: str, value, root: str = ROOT) -> None:
    with open(path(key, root), "w") as f:
        f.write(str(value))


def read(key: str, root: str = ROOT) -> str:
    with open(path(key, root)) as f:
        return f.read().strip()


def ensure_sysctl(key: str, value: str, root: str = ROOT) -> bool:
    """Set ``key`` to ``value``; True if it had to change (and the change is logged).

    The daemon's settings belong to the network namespace it runs in: on a
    node, the host's."""
    if read(key, root) == value:
        return False
    write(key, value, root)
    import logging  # the daemon's only: the CNI plugins never pay for it
    logging.getLogger(__name__).info("set %s = %s", key.replace("/", "."), value)
    return True
