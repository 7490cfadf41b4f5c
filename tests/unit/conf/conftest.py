"""Fixtures for kube-router-cni's unit tests: a fake node, a CLI runner, golden files."""
from __future__ import annotations

import json
import os
import pathlib

import pytest
from click.testing import CliRunner

from conf import defaults
from conf.cli import cli
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


@pytest.fixture
def run_cli():
    """Invoke kube-router-cni in-process; the real environment's config variables are hidden."""
    def run(args, host: Host | None = None, env: dict | None = None):
        env = {defaults.CONF_FILE_ENV: None, "NODE_NAME": None,
               "KUBERNETES_SERVICE_HOST": None, **(env or {})}
        return CliRunner(env=env).invoke(cli, [str(a) for a in args],
                                         obj=host or fake_host(), catch_exceptions=False)
    return run


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with KRT_REGENERATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"output differs from {path}"
    json.loads(text)
