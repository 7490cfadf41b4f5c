"""A private containerd (CRI plugin on) inside a test's node namespace.

Everything it owns lives under one temporary directory: root, state, sockets,
the CNI bin/conf dirs. It runs in the node namespace's *network* namespace only
(``nsenter --net``) and in a mount namespace of its own (``unshare --mount``):

- not ``ip netns exec``: that remounts /sys, which hides /sys/fs/cgroup, and
  runc cannot create a container without its cgroup hierarchies;
- a private mount namespace means the overlay/bind mounts of containers and the
  pod netns bind mounts vanish with the daemon, even if a test dies midway.

Pod processes live in the pod netns, not the node netns, and outlive a killed
shim; they are found and killed through the cgroup parent every sandbox is put in.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

from helpers import cgroups
SHIM_SOCKET_DIR = "/run/containerd/s"
NETNS_DIRS = ("/run/netns", "/var/run/netns")
CRI_NAMESPACE = "k8s.io"

CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
# Plugins that would probe or touch things outside the temp dir.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{root}/c.sock"
[ttrpc]
  address = "{root}/c.sock.ttrpc"
[debug]
  address = ""
  level = "debug"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state, otherwise under /run/containerd/runc
        Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"""


def missing_tools() -> list[str]:
    need = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter", "unshare")
    return [t for t in need if not shutil.which(t)]


pods_left = cgroups.pids


def pod_netns_files() -> set[str]:
    """The netns mount points containerd's CRI makes (``cni-<uuid>``)."""
    out = set()
    for d in NETNS_DIRS:
        if os.path.isdir(d):
            out.update(os.path.realpath(os.path.join(d, e)) for e in os.listdir(d)
                       if e.startswith("cni-"))
    return out


class PrivateContainerd:
    """containerd with a config of our own, started in ``node`` (a Netns)."""

    def __init__(self, node, bin_dir: str, conf_dir: str, sandbox_image: str,
                 snapshotter: str = "native"):
        self.node = node
        self.dir = tempfile.mkdtemp(prefix="krt-ctd-", dir="/tmp")   # short: socket paths
        self.socket = f"{self.dir}/c.sock"
        self.log_path = f"{self.dir}/containerd.log"
        # Every sandbox goes below this cgroup, so its processes can be found again.
        self.cgroup_parent = "/krt-ctd-" + os.path.basename(self.dir).rsplit("-", 1)[-1]
        self.config_path = f"{self.dir}/config.toml"
        pathlib.Path(self.config_path).write_text(CONFIG.format(
            root=self.dir, sandbox_image=sandbox_image, snapshotter=snapshotter,
            bin_dir=bin_dir, conf_dir=conf_dir))
        self.proc: subprocess.Popen | None = None
        self._netns_before = pod_netns_files()
        self._made_shim_dir = not os.path.exists(SHIM_SOCKET_DIR)
        self.task_ids: set[str] = set()

    def argv_in_node(self, cmd: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "slave",
                "nsenter", f"--net={self.node.path}", *cmd]

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv_in_node(["containerd", "--config", self.config_path]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._serving():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"containerd exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd not serving after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        out = subprocess.run(["ctr", "-a", self.socket, "version"], capture_output=True,
                             timeout=10)
        return out.returncode == 0

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 60):
        out = subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io", *args], input=input,
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {out.stderr.decode().strip()}")
        return out.stdout.decode()

    def import_image(self, archive: bytes, snapshotter: str = "native") -> str:
        return self.ctr("image", "import", f"--snapshotter={snapshotter}", "-", input=archive)

    def shim_socket(self, task_id: str) -> str:
        # containerd 1.6 runtime/v2/shim SocketAddress: one socket per shim, named
        # by a hash of (daemon address, namespace, id) under a fixed /run path.
        digest = hashlib.sha256(os.path.join(self.socket, CRI_NAMESPACE, task_id).encode())
        return os.path.join(SHIM_SOCKET_DIR, digest.hexdigest())

    def remember_tasks(self) -> None:
        try:
            self.task_ids.update(self.ctr("containers", "list", "-q", timeout=10).split())
        except (RuntimeError, subprocess.TimeoutExpired):
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = pathlib.Path(self.log_path).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the daemon, then everything it left behind; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.remember_tasks()
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Shims set up their own process group in the node namespace.
        for pid in subprocess.run(["ip", "netns", "pids", self.node.name], capture_output=True,
                                  text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        cgroups.kill_and_remove(self.cgroup_parent)
        for path in sorted(self.leaked_runtime_files()):
            # Pod netns bind mounts lived in the daemon's mount namespace, which is
            # gone: what is left on the host is the empty mount-point file.
            try:
                os.remove(path)
            except OSError:
                pass
        if self._made_shim_dir:
            for d in (SHIM_SOCKET_DIR, os.path.dirname(SHIM_SOCKET_DIR)):
                try:
                    os.rmdir(d)
                except OSError:
                    break
        shutil.rmtree(self.dir, ignore_errors=True)

    def leaked_runtime_files(self) -> set[str]:
        """Pod netns files and shim sockets of this daemon still on the host."""
        shims = {self.shim_socket(i) for i in self.task_ids}
        return (pod_netns_files() - self._netns_before) | {p for p in shims if os.path.exists(p)}
