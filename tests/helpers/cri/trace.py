"""Recording every CNI call a runtime makes, without changing what runs.

Each plugin executable in the bin dir is moved aside and replaced by a small
shell script that saves the call's CNI_* environment, stdin, stdout and exit
status into a directory of its own, then runs the real executable with the
same input. The runtime sees the real plugin's output and exit status.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex

WRAPPER = """#!/bin/sh
d=$(mktemp -d {trace}/$(date +%s%N)-{name}-XXXXXX)
env | grep '^CNI_' > "$d/env"
cat > "$d/stdin"
{real} < "$d/stdin" > "$d/stdout"
rc=$?
echo "$rc" > "$d/rc"
cat "$d/stdout"
exit "$rc"
"""


@dataclasses.dataclass
class CniCall:
    plugin: str
    env: dict
    stdin: dict
    stdout: str
    rc: int

    @property
    def command(self) -> str:
        return self.env.get("CNI_COMMAND", "")

    @property
    def netns(self) -> str:
        return self.env.get("CNI_NETNS", "")

    @property
    def cni_args(self) -> dict:
        pairs = (p.split("=", 1) for p in self.env.get("CNI_ARGS", "").split(";") if p)
        return dict(pairs)

    def result(self) -> dict:
        return json.loads(self.stdout) if self.stdout.strip() else {}


def ensure_tracing(bin_dir: str, trace_dir: str) -> None:
    """Put a recording wrapper in front of every executable in ``bin_dir``."""
    real_dir = os.path.join(os.path.dirname(bin_dir.rstrip("/")), "real-bin")
    os.makedirs(real_dir, exist_ok=True)
    os.makedirs(trace_dir, exist_ok=True)
    for name in sorted(os.listdir(bin_dir)):
        real = os.path.join(real_dir, name)
        os.rename(os.path.join(bin_dir, name), real)
        path = pathlib.Path(bin_dir, name)
        path.write_text(WRAPPER.format(trace=shlex.quote(trace_dir), name=name,
                                       real=shlex.quote(real)))
        path.chmod(0o755)


def read_calls(trace_dir: str) -> list[CniCall]:
    """Every finished call, in the order they started."""
    calls = []
    for d in sorted(pathlib.Path(trace_dir).iterdir()):
        if not (d / "rc").exists():
            continue
        env = dict(line.split("=", 1) for line in (d / "env").read_text().splitlines()
                   if "=" in line)
        raw = (d / "stdin").read_text()
        calls.append(CniCall(plugin=d.name.split("-", 1)[1].rsplit("-", 1)[0], env=env,
                             stdin=json.loads(raw) if raw.strip() else {},
                             stdout=(d / "stdout").read_text(),
                             rc=int((d / "rc").read_text())))
    return calls
