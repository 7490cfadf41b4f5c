"""Processes a container runtime under test left behind, found through the cgroup
parent the test gave it (cgroup v1: one directory per hierarchy), killed and removed."""
from __future__ import annotations

import os
import pathlib
import signal
import time

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")


def dirs(cgroup: str) -> list[pathlib.Path]:
    """Every directory of ``cgroup`` and below it in every hierarchy, deepest first."""
    out: list[pathlib.Path] = []
    if not CGROUP_ROOT.is_dir():
        return out
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / cgroup.strip("/")
        if top.is_dir():
            out.extend(p for p in top.rglob("*") if p.is_dir())
            out.append(top)
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def pids(cgroup: str) -> set[int]:
    """PIDs still in ``cgroup`` (or below it) in any hierarchy."""
    found: set[int] = set()
    for d in dirs(cgroup):
        try:
            found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return found


def kill_and_remove(cgroup: str, timeout: float = 5.0) -> None:
    """SIGKILL whatever is in ``cgroup`` until it is empty, then remove its directories
    (children first: rmdir only works on an empty cgroup)."""
    deadline = time.monotonic() + timeout
    while (left := pids(cgroup)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for d in dirs(cgroup):
        try:
            d.rmdir()
        except OSError:
            pass
