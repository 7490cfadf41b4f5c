"""install: plugin executables a runtime can exec without a virtualenv.

Each launcher is a three-line script run by this interpreter with ``-I -S``:
no site processing (no .pth files, no site-packages scan), no user paths, no
PYTHON* variables. The runtime execs one process per plugin per pod event, and
site processing costs more than the plugin's own imports. The project's import
path is written into the launcher instead.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import sysconfig

from conf import defaults, fileio
from conf.errors import ConfError

# Linux reads at most this many bytes of a "#!" line (BINPRM_BUF_SIZE - 1).
SHEBANG_MAX = 255


def project_paths() -> list[str]:
    """Directories that must be on sys.path for ``cni`` to import without site."""
    spec = importlib.util.find_spec("cni")
    if spec is None or not spec.submodule_search_locations:
        raise ConfError("the cni package is not importable from this interpreter: "
                        "install kube-router into it first")
    paths = [os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))]
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


@dataclasses.dataclass(frozen=True)
class Installed:
    path: str
    written: bool
    note: str = ""


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
                   interpreter: str = sys.executable) -> tuple[list[Installed], list[str]]:
    """Launchers, loopback and (for --plugins reference) the reference plugins.

    Returns what was installed and warnings for what could not be.
    """
    installed = ensure_launchers(bin_dir, interpreter, project_paths())
    warnings = []
    needed = [defaults.LOOPBACK]
    if plugins == "reference":
        needed += sorted(defaults.PLUGIN_TYPES["reference"].values())
    for name in needed:
        result = ensure_copied(name, bin_dir, reference_dir)
        if result is None:
            warnings.append(f"no {name} plugin in {bin_dir} and none in {reference_dir} to "
                            "copy: runtimes need it; install containernetworking-plugins "
                            "or pass --reference-dir")
        else:
            installed.append(result)
    return installed, warnings
