"""Fixtures for kube-router-cni's unit tests: the CLI run in-process on a fake node."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from conf import defaults
from conf.cli import cli
from conf.host import Host
from conf_helpers import fake_host


@pytest.fixture
def run_cli():
    """Invoke kube-router-cni in-process; the real environment's config variables are hidden."""
    def run(args, host: Host | None = None, env: dict | None = None):
        env = {defaults.CONF_FILE_ENV: None, "NODE_NAME": None,
               "KUBERNETES_SERVICE_HOST": None, **(env or {})}
        return CliRunner(env=env).invoke(cli, [str(a) for a in args],
                                         obj=host or fake_host(), catch_exceptions=False)
    return run
