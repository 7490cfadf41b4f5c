"""Entering a network namespace by path.

Namespaces are per thread: ``entered(ns)`` moves the calling thread in and back
out. A socket keeps the namespace it was opened in, so the plugins open one
netlink socket per namespace and do not hop back and forth. A sysctl
(lowlevel/sysctl.py) is written while inside.
"""
from __future__ import annotations

import errno
import os

CLONE_NEWNET = 0x40000000


def _libc_setns():
    # Python 3.11 has no os.setns. The ctypes package costs ~4 ms to import (struct,
    # endian helpers, every C type); the bare _ctypes extension module costs ~0.7 ms
    # and is all one libc call needs.
    from _ctypes import (FUNCFLAG_CDECL, FUNCFLAG_USE_ERRNO, CFuncPtr, _SimpleCData,
                         dlopen, get_errno)

    class c_int(_SimpleCData):
        _type_ = "i"

    class Func(CFuncPtr):
        _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
        _restype_ = c_int
        _argtypes_ = (c_int, c_int)

    class Libc:
        _handle = dlopen(None, 0)

    call = Func(("setns", Libc()))

    def setns(fd: int, nstype: int) -> None:
        if call(fd, nstype) != 0:
            err = get_errno()
            raise OSError(err, os.strerror(err))
    return setns


_setns = getattr(os, "setns", None) or _libc_setns()


def enter(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` for good (a thread
    made for that namespace; ``entered`` comes back)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, CLONE_NEWNET)
    except OSError as exc:
        raise OSError(exc.errno, f"setns({path}): {exc.strerror}") from None
    finally:
        os.close(fd)


class NotANetns(OSError):
    """The path does not exist or is not a network namespace."""


def open_netns(path: str) -> int:
    """An O_RDONLY fd of the namespace at ``path``; NotANetns names the path otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NotANetns(exc.errno, f"failed to open netns {path!r}: {exc.strerror}") from None
    # Namespace files live on nsfs; anything else (a regular file, a directory) is
    # not a namespace even if setns would be the first to notice.
    if os.fstat(fd).st_dev != os.stat("/proc/self/ns/net").st_dev:
        os.close(fd)
        raise NotANetns(errno.EINVAL, f"{path!r} is not a network namespace")
    return fd


class NodeNetns(OSError):
    """The path names the plugin's own network namespace (the node's), not a container's."""


def same_namespace(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two nsfs files are one namespace. A namespace is an inode on nsfs:
    /proc/PID/ns/net, /proc/self/ns/net and a bind mount of either under /run/netns
    all stat to the same (st_dev, st_ino), whatever their paths."""
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_current_netns(fd: int) -> bool:
    """Whether the namespace ``fd`` names is the calling thread's own."""
    return same_namespace(os.fstat(fd), os.stat("/proc/thread-self/ns/net"))


def open_container_netns(path: str) -> int:
    """``open_netns`` for a container's namespace: NodeNetns when ``path`` names the
    caller's own. Checked on the opened fd, so a path swapped after the check cannot
    slip the node's namespace in."""
    fd = open_netns(path)
    if is_current_netns(fd):
        os.close(fd)
        raise NodeNetns(errno.EINVAL, f"netns {path!r} is the plugin's own network namespace,"
                        " not a container's")
    return fd


class entered:
    """``with entered(netns_fd):`` runs the block with the calling thread inside the
    namespace of ``netns_fd``, and puts the thread back where it was afterwards."""

    __slots__ = ("_netns_fd", "_home")

    def __init__(self, netns_fd: int):
        self._netns_fd = netns_fd
        self._home = -1

    def __enter__(self) -> None:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self._netns_fd, CLONE_NEWNET)
        except OSError as exc:
            os.close(self._home)
            raise NotANetns(exc.errno, f"failed to enter netns: {exc.strerror}") from None

    def __exit__(self, *exc_info) -> bool:
        try:
            _setns(self._home, CLONE_NEWNET)
        finally:
            os.close(self._home)
        return False
