"""proxyd.kernel.state: the builders' vocabulary loads neither pyroute2 nor an applier."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
BUILDERS = ("proxyd.kernel.state", "proxyd.netpol.build", "proxyd.proxy.build",
            "proxyd.routing.model")
APPLIERS = ("proxyd.kernel.iptables", "proxyd.kernel.ipset", "proxyd.kernel.ipvs",
            "proxyd.kernel.routes", "proxyd.kernel.vips")


def loaded_after_importing(modules: tuple[str, ...]) -> set[str]:
    """sys.modules of a fresh interpreter that imported ``modules`` and nothing else."""
    code = (f"import importlib, json, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return set(json.loads(out))


def test_builders_do_not_load_pyroute2_or_the_appliers():
    loaded = loaded_after_importing(BUILDERS)
    assert set(BUILDERS) <= loaded
    assert {m for m in loaded if m.split(".")[0] == "pyroute2"} == set()
    assert loaded & set(APPLIERS) == set()

