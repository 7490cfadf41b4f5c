"""Running ``kube-router-cni`` from the tests, as an operator runs it."""
from __future__ import annotations

import os
import subprocess
import sys

from conf import defaults


def kube_router_cni(*args) -> subprocess.CompletedProcess:
    """Run the command in a fresh interpreter (the environment's conf-file variable removed,
    so only the arguments decide); it must succeed."""
    cmd = [sys.executable, "-c", "import sys; from conf.cli import main; sys.exit(main())",
           *map(str, args)]
    env = {k: v for k, v in os.environ.items() if k != defaults.CONF_FILE_ENV}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out
