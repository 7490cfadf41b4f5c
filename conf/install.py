"""install: plugin executables a runtime can exec without a virtualenv.

Each launcher is a short script run by an interpreter with ``-I -S``: no site
processing (no .pth files, no site-packages scan), no user paths, no PYTHON*
variables. The runtime execs one process per plugin per pod event, and site
processing costs more than the plugin's own imports. The import path is
written into the launcher instead.

Two ways to lay that out:

* this installation (the default): the launchers run this interpreter and
  import ``cni`` from where it is installed;
* host mode (``--lib-dir``): for an installer that is not on the node itself,
  such as a DaemonSet's init container with the node's / mounted at
  ``--root``. Its interpreter and import path do not exist on the node, so the
  plugins' packages, ``cni`` and the ``lowlevel`` it imports (standard library
  only, by design), are copied under ``--lib-dir`` and the launchers run the
  node's ``--python``, every path in them as the node sees it.

A host-mode copy lives in ``<lib-dir>/cni-<digest of its sources>``. A new
version is a new directory that appears complete (built under a temporary name,
then renamed); the launchers switch to it one atomic write each, and only then
are older copies removed, so a plugin never imports a mix of two versions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
import tempfile

from conf import defaults, fileio
from conf.errors import ConfError
from conf.settings import under_root

# Linux reads at most this many bytes of a "#!" line (BINPRM_BUF_SIZE - 1).
SHEBANG_MAX = 255
# The node's interpreter in host mode unless --python says otherwise.
HOST_PYTHON = "/usr/bin/python3"
MIN_PYTHON = (3, 11)
# Host-mode copies and their temporary build directories: the only entries of
# --lib-dir install creates or removes.
LIBRARY_PREFIX = "cni-"
DIGEST_CHARS = 16
_LIBRARY_RE = re.compile(rf"{LIBRARY_PREFIX}[0-9a-f]{{{DIGEST_CHARS}}}")
_BUILD_RE = re.compile(rf"\.{LIBRARY_PREFIX}[0-9a-f]{{{DIGEST_CHARS}}}\..+\.tmp")
# What the plugins import: copied whole in host mode.
PLUGIN_PACKAGES = ("cni", "lowlevel")
# Linux's limit on symbolic links followed while resolving one path (MAXSYMLINKS).
MAX_SYMLINKS = 40


@dataclasses.dataclass(frozen=True)
class Installed:
    path: str
    written: bool
    note: str = ""


@dataclasses.dataclass
class Report:
    installed: list[Installed] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


def package_dir(name: str = "cni") -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfError(f"the {name} package is not importable from this interpreter: "
                        "install kube-router into it first")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def project_paths() -> list[str]:
    """Directories that must be on sys.path for ``cni`` to import without site."""
    paths = [os.path.dirname(package_dir())]
    purelib = sysconfig.get_paths()["purelib"]
    if purelib not in paths:
        paths.append(purelib)
    return paths


def build_launcher(module: str, func: str, interpreter: str, paths: list[str]) -> str:
    # The kernel hands everything after the interpreter to it as ONE argument,
    # so the two flags must share one word.
    shebang = f"#!{interpreter} -IS"
    if " " in interpreter or len(shebang) > SHEBANG_MAX:
        raise ConfError(f"interpreter path {interpreter!r} cannot be used in a #! line "
                        f"(no spaces, at most {SHEBANG_MAX} bytes): install into a "
                        "virtualenv with a shorter path")
    return (f"{shebang}\n"
            f"# CNI plugin launcher written by `kube-router-cni install`.\n"
            f"import sys\n"
            f"sys.path.extend({paths!r})\n"
            f"from {module} import {func}\n"
            f"sys.exit({func}())\n")


def ensure_launchers(bin_dir: str, interpreter: str, paths: list[str]) -> list[Installed]:
    out = []
    for name, (module, func) in sorted(defaults.LAUNCHERS.items()):
        path = os.path.join(bin_dir, name)
        text = build_launcher(module, func, interpreter, paths)
        out.append(Installed(path, fileio.write_atomic(path, text.encode(), mode=0o755),
                             f"runs {module}:{func}"))
    return out


def ensure_copied(name: str, bin_dir: str, reference_dir: str) -> Installed | None:
    """Copy ``name`` from the reference plugins when the bin dir has none."""
    dst = os.path.join(bin_dir, name)
    if os.path.exists(dst):
        return Installed(dst, False, "already present, left as is")
    src = os.path.join(reference_dir, name)
    if not os.path.isfile(src):
        return None
    with open(src, "rb") as f:
        data = f.read()
    fileio.write_atomic(dst, data, mode=0o755)
    return Installed(dst, True, f"copied from {src}")


def ensure_plugins(bin_dir: str, reference_dir: str, plugins: str,
                   interpreter: str = sys.executable,
                   paths: list[str] | None = None) -> Report:
    """Launchers, loopback and (for --plugins reference) the reference plugins.

    Reports what was installed and warns about what could not be.
    """
    report = Report(ensure_launchers(bin_dir, interpreter,
                                     project_paths() if paths is None else paths))
    needed = [defaults.LOOPBACK]
    if plugins == "reference":
        needed += sorted(defaults.PLUGIN_TYPES["reference"].values())
    for name in needed:
        result = ensure_copied(name, bin_dir, reference_dir)
        if result is None:
            report.warnings.append(
                f"no {name} plugin in {bin_dir} and none in {reference_dir} to copy: "
                "runtimes need it; install containernetworking-plugins or pass --reference-dir")
        else:
            report.installed.append(result)
    return report


# ---- host mode ---------------------------------------------------------------

def ensure_host_plugins(root: str | None, bin_dir: str, reference_dir: str, plugins: str,
                        python: str, lib_dir: str,
                        sources: dict[str, str] | None = None) -> Report:
    """Host mode: copy the plugins' packages under ``lib_dir``, launchers run the node's
    ``python``.

    ``bin_dir``, ``reference_dir``, ``python`` and ``lib_dir`` are paths as the
    node sees them; each is read or written under ``root``. ``sources`` maps each
    package to copy to its directory (default: PLUGIN_PACKAGES as this interpreter
    imports them).
    """
    if not os.path.isabs(lib_dir):
        raise ConfError(f"--lib-dir {lib_dir!r} must be an absolute path on the node")
    warnings = check_host_python(root, python)
    lib_on_disk = under_root(root, lib_dir)
    library = ensure_library(lib_on_disk, build_library_files(sources))
    name = os.path.basename(library.path)
    report = ensure_plugins(under_root(root, bin_dir), under_root(root, reference_dir),
                            plugins, python, [os.path.join(lib_dir, name)])
    report.installed.insert(0, library)
    report.removed += cleanup_stale_libraries(lib_on_disk, keep=name)
    report.warnings[:0] = warnings
    return report


def resolve_under_root(root: str | None, path: str) -> str:
    """``path`` with every symbolic link followed as the node would: absolute link
    targets start again at ``root``, not at this process's /. Returns the node's view."""
    pending = [part for part in path.split("/") if part]
    done, hops = "/", 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = os.path.dirname(done)
            continue
        candidate = os.path.join(done, part)
        on_disk = under_root(root, candidate)
        if not os.path.islink(on_disk):
            done = candidate
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise ConfError(f"{path}: too many levels of symbolic links (under {root or '/'})")
        target = os.readlink(on_disk)
        if target.startswith("/"):
            done = "/"
        pending[:0] = [p for p in target.split("/") if p]
    return done


def check_host_python(root: str | None, python: str) -> list[str]:
    """Refuse an interpreter the node does not have or that is too old; warn when its
    version cannot be told. Host binaries are never run: only the file is looked at."""
    need = ".".join(map(str, MIN_PYTHON))
    if not os.path.isabs(python):
        raise ConfError(f"--python {python!r} must be an absolute path on the node")
    resolved = resolve_under_root(root, python)
    on_disk = under_root(root, resolved)
    if not (os.path.isfile(on_disk) and os.access(on_disk, os.X_OK)):
        raise ConfError(f"--python {python}: no executable file there on the node (looked "
                        f"at {on_disk}): the node needs Python >= {need} for the plugins")
    shown = python if resolved == python else f"{python} -> {resolved}"
    match = re.fullmatch(r"python(\d+)\.(\d+)", os.path.basename(resolved))
    if match is None:
        return [f"cannot tell the version of {shown} from its name: the plugins need "
                f"Python >= {need} on the node"]
    if (int(match[1]), int(match[2])) < MIN_PYTHON:
        raise ConfError(f"--python {shown} is Python {match[1]}.{match[2]}: the plugins "
                        f"need Python >= {need} on the node")
    return []


def build_package_files(src: str) -> dict[str, bytes]:
    """Relative path -> content of every .py file of the package at ``src``."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, src)] = f.read()
    if "__init__.py" not in files:
        raise ConfError(f"{src} is not a Python package (no __init__.py)")
    return files


def build_library_files(sources: dict[str, str] | None = None) -> dict[str, bytes]:
    """Path under the copy's root ("cni/bridge/plugin.py") -> content, for every package copied."""
    sources = sources or {name: package_dir(name) for name in PLUGIN_PACKAGES}
    return {f"{name}/{rel}": data for name, src in sorted(sources.items())
            for rel, data in build_package_files(src).items()}


def library_name(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + str(len(files[rel])).encode() + b"\0")
        digest.update(files[rel])
    return LIBRARY_PREFIX + digest.hexdigest()[:DIGEST_CHARS]


def read_library(library: str) -> dict[str, bytes]:
    """The .py files of a copy's packages; the interpreter's own __pycache__ is not part
    of it."""
    try:
        entries = sorted(os.listdir(library))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return build_library_files({name: os.path.join(library, name) for name in entries
                                if os.path.isdir(os.path.join(library, name))})


def ensure_library(lib_dir: str, files: dict[str, bytes]) -> Installed:
    """``lib_dir/cni-<digest>/`` holding exactly ``files`` (paths under it, "cni/..."); written
    only when not."""
    name = library_name(files)
    target = os.path.join(lib_dir, name)
    packages = sorted({rel.split("/", 1)[0] for rel in files})
    note = f"the {' and '.join(packages)} packages, {len(files)} modules"
    try:
        if read_library(target) == files:
            return Installed(target, False, note)
    except ConfError:
        pass                        # a damaged copy (no __init__.py) is rebuilt below
    build = None
    try:
        os.makedirs(lib_dir, mode=0o755, exist_ok=True)
        build = tempfile.mkdtemp(dir=lib_dir, prefix=f".{name}.", suffix=".tmp")
        os.chmod(build, 0o755)
        write_tree(build, files)
        if os.path.lexists(target):
            # A damaged copy under the right name: move it aside, then in.
            aside = tempfile.mkdtemp(dir=lib_dir, prefix=f".{name}.", suffix=".tmp")
            os.rename(target, os.path.join(aside, "old"))
            shutil.rmtree(aside)
        os.rename(build, target)
        build = None
        fsync_dir(lib_dir)
    except OSError as exc:
        raise ConfError(f"cannot write {target}: {exc.strerror or exc} "
                        f"({exc.filename or lib_dir})") from None
    finally:
        if build is not None:
            shutil.rmtree(build, ignore_errors=True)
    return Installed(target, True, note)


def write_tree(top: str, files: dict[str, bytes]) -> None:
    for rel, data in sorted(files.items()):
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)     # not narrowed by the umask
            os.fsync(f.fileno())
    for dirpath, _, _ in os.walk(top):
        os.chmod(dirpath, 0o755)
        fsync_dir(dirpath)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cleanup_stale_libraries(lib_dir: str, keep: str) -> list[str]:
    """Remove older copies and leftover builds; nothing else in ``lib_dir`` is touched."""
    try:
        entries = sorted(os.listdir(lib_dir))
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        if entry == keep or not (_LIBRARY_RE.fullmatch(entry) or _BUILD_RE.fullmatch(entry)):
            continue
        path = os.path.join(lib_dir, entry)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise ConfError(f"cannot remove the stale copy {path}: {exc.strerror or exc}") \
                from None
        removed.append(path)
    return removed
