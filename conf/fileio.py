"""Reading configurations and writing them atomically.

Runtimes (containerd, CRI-O, podman) watch the configuration directory and load
whatever *.conf/*.conflist/*.json they find: a file must appear complete or not
at all. So: a dot-named temp file in the same directory (same filesystem, and
an extension libcni ignores), fsync, rename over the target, fsync the directory.
"""
from __future__ import annotations

import json
import os
import tempfile

from conf.errors import EXIT_UNUSABLE, ConfError


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfError(f"{path}: no such file", EXIT_UNUSABLE) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}",
                        EXIT_UNUSABLE) from None


def read_json(path: str) -> dict:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}", EXIT_UNUSABLE) from None


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that; True if written."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfError(f"cannot write {path}: {exc.filename or directory} is not a "
                        "directory") from None
    except OSError as exc:
        raise ConfError(f"cannot write {path}: {exc.strerror or exc} "
                        f"({exc.filename or directory})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return True
