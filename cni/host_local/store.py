"""Leases on disk, in the reference host-local plugin's format.

``<dataDir>/<network>/<address>`` holds ``<containerID>\\r\\n<ifname>`` (files
written by plugins before 0.7 hold only the container ID), ``last_reserved_ip.<n>``
holds the address last handed out from range set ``n``, and ``lock`` is
flock()ed around every read-modify-write. Both plugins take the same flock,
so they can share one directory, even at the same time.
"""
from __future__ import annotations

import fcntl
import os

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"


def lease_content(container_id: str, ifname: str) -> str:
    return container_id.strip() + LINE_BREAK + ifname


def is_lease_name(name: str) -> bool:
    return name != LOCK_NAME and not name.startswith(LAST_RESERVED_PREFIX) and not name.startswith(".")


def owned_by(leases: dict[str, str], container_id: str, ifname: str) -> list[str]:
    """Lease names held by (container_id, ifname).

    Like the reference: the exact "id\\r\\nifname" owner first; only when none
    matches, leases in the old format that hold the bare container ID.
    """
    exact = lease_content(container_id, ifname)
    names = [n for n, owner in leases.items() if owner == exact]
    if not names:
        bare = container_id.strip()
        names = [n for n, owner in leases.items() if owner == bare]
    return sorted(names)


def stale_leases(leases: dict[str, str], valid: set[tuple[str, str]]) -> list[str]:
    """Leases whose attachment is not in ``valid`` (GC).

    An old-format lease names no interface: it is kept while any valid
    attachment has its container ID.
    """
    valid_ids = {cid for cid, _ in valid}
    stale = []
    for name, owner in leases.items():
        cid, sep, ifname = owner.partition(LINE_BREAK)
        keep = (cid, ifname) in valid if sep else cid in valid_ids
        if not keep:
            stale.append(name)
    return sorted(stale)


class LeaseStore:
    """One network's lease directory; use as a context manager to hold the lock."""

    def __init__(self, data_dir: str, network: str):
        self.dir = os.path.join(data_dir, network)
        self._lock_fd: int | None = None

    def __enter__(self) -> "LeaseStore":
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o750)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def read_leases(self) -> dict[str, str]:
        """{lease file name: owner} with the owner text stripped of surrounding space."""
        leases = {}
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if not is_lease_name(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                with open(entry.path, "rb") as f:
                    leases[entry.name] = f.read().decode("utf-8", "replace").strip()
            except OSError:
                continue
        return leases

    def reserve(self, name: str, container_id: str, ifname: str, range_index: int) -> bool:
        """Create the lease file; False when it already exists."""
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(lease_content(container_id, ifname).encode())
        except BaseException:
            _remove(path)
            raise
        self.write_last_reserved(range_index, name)
        return True

    def write_last_reserved(self, range_index: int, name: str) -> None:
        path = os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{range_index}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(name.encode())

    def last_reserved(self, range_index: int) -> str | None:
        try:
            with open(os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{range_index}"), "rb") as f:
                return f.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None

    def release(self, names: list[str]) -> None:
        for name in names:
            _remove(os.path.join(self.dir, name))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
