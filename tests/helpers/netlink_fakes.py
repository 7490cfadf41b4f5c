"""Pieces the stateful pyroute2 fakes of the unit tests share."""
from __future__ import annotations

import errno

from pyroute2.netlink.exceptions import NetlinkError


class Msg(dict):
    """A netlink message as an applier reads it: fields and attributes by name, nested ones
    by a tuple path."""

    def get(self, key, default=None):
        node = self
        for part in key if isinstance(key, tuple) else (key,):
            node = dict.get(node, part) if isinstance(node, dict) else None
        return default if node is None else node


def refuse(code):
    """The error the kernel answers with ``code`` (EEXIST, ENODEV, ...)."""
    return NetlinkError(code, errno.errorcode[code])
