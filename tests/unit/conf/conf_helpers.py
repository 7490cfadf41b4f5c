"""Helpers for kube-router-cni's unit tests: a fake node and golden files."""
from __future__ import annotations

import json
import os
import pathlib

from conf.host import Host

HERE = pathlib.Path(__file__).parent
GOLDEN = HERE / "golden"
INPUTS = HERE / "inputs"
# Set to rewrite the golden files from the current output (then review the diff).
REGENERATE = os.environ.get("KRT_REGENERATE_GOLDEN") == "1"


def fake_host(iface: str | None = "eth0", mtu: int = 1450, environ: dict | None = None,
              hostname: str = "node-a") -> Host:
    mtus = {iface: mtu} if iface else {}

    def interface_mtu(name):
        if name not in mtus:
            raise OSError(2, "no such interface", name)
        return mtus[name]

    return Host(environ=environ or {}, hostname=lambda: hostname,
                default_route_interface=lambda: iface, interface_mtu=interface_mtu)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with KRT_REGENERATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"output differs from {path}"
    json.loads(text)
