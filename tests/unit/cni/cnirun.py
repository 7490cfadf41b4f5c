"""Running CNI plugins the way a container runtime does: env + stdin, JSON out."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

OURS = str(pathlib.Path(sys.executable).with_name("kube-router-host-local"))
REFERENCE = "/usr/lib/cni/host-local"


class PluginRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.json = json.loads(proc.stdout) if proc.stdout.strip() else None

    def __repr__(self):
        return f"PluginRun(rc={self.rc}, stdout={self.stdout[:500]!r}, stderr={self.stderr[:500]!r})"


def run_plugin(binary: str, command: str, conf, *, container_id: str | None = "c1",
               ifname: str | None = "eth0", netns: str | None = "/var/run/netns/x",
               path: str | None = "/usr/lib/cni", args: str | None = None,
               stdin: bytes | None = None, timeout: float = 30) -> PluginRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    for key, value in (("CNI_COMMAND", command), ("CNI_CONTAINERID", container_id),
                       ("CNI_IFNAME", ifname), ("CNI_NETNS", netns), ("CNI_PATH", path),
                       ("CNI_ARGS", args)):
        if value is not None:
            env[key] = value
    data = stdin if stdin is not None else json.dumps(conf).encode()
    proc = subprocess.run([binary], input=data, env=env, capture_output=True, timeout=timeout)
    return PluginRun(proc)


def host_local_conf(data_dir, version="1.0.0", name="net1", **ipam) -> dict:
    return {"cniVersion": version, "name": name, "type": "host-local",
            "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}}


def disk_state(data_dir, name="net1") -> dict[str, bytes]:
    d = pathlib.Path(data_dir) / name
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


