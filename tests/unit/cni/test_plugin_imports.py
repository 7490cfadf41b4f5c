"""Start-up: a plugin process imports its entry and one command's part, no other command's.

The runtime execs a plugin once per command, so each module a command does not
need is start-up time spent on every pod ADD or DEL for nothing.
"""
import pathlib
import subprocess
import sys

import pytest

ROOT = str(pathlib.Path(__file__).resolve().parents[3])
BRIDGE_PARTS = {"cni.bridge.add", "cni.bridge.check", "cni.bridge.delete"}
# Needed only by some commands or configurations: loaded inside the function that uses them.
ON_DEMAND = {"cni.ipam", "cni.ipmasq", "cni.types", "cni.host_local.plugin"}


def loaded_after(*modules: str) -> set[str]:
    """Our modules loaded by a fresh interpreter (no site, as the launchers run) importing
    ``modules``."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            + "; ".join(f"import {m}" for m in modules)
            + "; print(' '.join(m for m in sys.modules if m.split('.')[0] in ('cni', 'lowlevel')))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, ROOT], capture_output=True,
                         text=True, timeout=30, check=True)
    return set(out.stdout.split())


def test_the_bridge_entry_loads_no_command_part():
    assert loaded_after("cni.bridge.plugin") & (BRIDGE_PARTS | ON_DEMAND | {"cni.undo"}) == set()


@pytest.mark.parametrize("part", sorted(BRIDGE_PARTS))
def test_a_bridge_command_loads_no_other_command_part(part):
    others = BRIDGE_PARTS - {part}
    assert loaded_after("cni.bridge.plugin", part) & (others | {"cni.ipmasq"}) == set()


def test_the_portmap_entry_loads_neither_bridge_nor_ipam():
    loaded = loaded_after("cni.portmap.plugin")
    assert {m for m in loaded if m.startswith(("cni.bridge", "cni.host_local"))} == set()
    assert loaded & ON_DEMAND == set()
