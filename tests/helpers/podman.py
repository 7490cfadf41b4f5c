"""podman (CNI backend) as a real CNI consumer, confined to a test's node namespace and tmp dir.

Every path podman writes is private: storage (``--root``/``--runroot``, vfs),
its tmp dir, config (``CONTAINERS_CONF``) and a cgroup parent named for the
test. Three things land outside those places, and ``cleanup`` undoes them:
the container's netns is bind-mounted at ``/run/netns/netns-<uuid>``; libcni
caches each ADD result in ``/var/lib/cni/results/<net>-<id>-<ifname>``
(podman 4.3 gives libcni no cache dir of its own); runc keeps its state in
``/run/runc/<id>``. All three go away on a clean teardown.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

from helpers import cgroups
from helpers.netns import PREFIX, Netns, run
from krsim.netns import unique_name

BUSYBOX = "/bin/busybox"
LIBCNI_CACHE = pathlib.Path("/var/lib/cni/results")
RUNC_STATE = pathlib.Path("/run/runc")
WORK_PREFIX = "krt-podman-"
REQUIRED = ("podman", "runc", "conmon", "nsenter")

# The CGI answers with the peer address busybox httpd saw, so a test can tell
# a masqueraded connection from a direct one. httpd listens on a dual-stack
# socket, so IPv4 peers arrive as "[::ffff:a.b.c.d]".
WHOAMI_CGI = """#!/bin/sh
peer=${REMOTE_ADDR#[}
peer=${peer%]}
printf 'Content-Type: text/plain\\r\\n\\r\\n%s' "${peer#::ffff:}"
"""
INDEX = "served by busybox httpd in a podman container\n"


def missing_tools() -> list[str]:
    tools = [t for t in REQUIRED if shutil.which(t) is None]
    if not os.access(BUSYBOX, os.X_OK):
        tools.append(BUSYBOX)
    return tools


def build_busybox_rootfs(root: pathlib.Path) -> pathlib.Path:
    """A root filesystem of static busybox, its applets and a web root."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    applets = run([BUSYBOX, "--list"]).stdout.split()
    # Relative links: `busybox --install -s` links to the host's absolute
    # /bin/busybox path, which resolves to nothing inside the container.
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    for d in ("dev", "proc", "sys", "tmp", "etc", "www/cgi-bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "www/index.html").write_text(INDEX)
    cgi = root / "www/cgi-bin/whoami"
    cgi.write_text(WHOAMI_CGI)
    cgi.chmod(0o755)
    return root


def build_containers_conf(work: pathlib.Path, cni_bin_dir: str, cni_conf_dir: str) -> str:
    return f"""\
[containers]
# podman's default ulimits exceed this machine's hard limits.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
pids_limit = 0

[network]
network_backend = "cni"
cni_plugin_dirs = ["{cni_bin_dir}"]
network_config_dir = "{cni_conf_dir}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{work / 'tmp'}"
"""


class Podman:
    """podman commands run with the node namespace as their network namespace.

    ``nsenter --net``, not ``ip netns exec``: the latter remounts /sys in a
    private mount namespace, which hides the cgroup v1 mounts under
    /sys/fs/cgroup, and runc then fails with "no cgroup mount found in
    mountinfo". Entering only the network namespace keeps the host's mounts,
    while every CNI plugin podman execs still runs in the node namespace.
    """

    def __init__(self, node: Netns, cni_bin_dir: str, cni_conf_dir: str):
        self.node = node
        # podman refuses a runroot over 50 characters (conmon's socket paths
        # must fit sun_path), longer than pytest's tmp_path: use a short dir.
        self.work = work = pathlib.Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
        (work / "tmp").mkdir()
        conf = work / "containers.conf"
        conf.write_text(build_containers_conf(work, cni_bin_dir, cni_conf_dir))
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(work),
                    "CONTAINERS_CONF": str(conf)}
        self.cgroup_parent = "/" + unique_name("podman", PREFIX)
        self.containers: dict[str, str] = {}   # name -> full container ID
        self.sandboxes: dict[str, str] = {}    # name -> /run/netns/... path
        self.networks: dict[str, str] = {}     # name -> CNI network name

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", f"--net={self.node.path}", "podman",
                "--root", str(self.work / "storage"), "--runroot", str(self.work / "run"),
                "--storage-driver", "vfs", *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 30):
        return run(self.argv(*args), check=check, timeout=timeout, env=self.env)

    def start(self, name: str, network: str, rootfs: pathlib.Path, *cmd: str,
              ports: tuple[str, ...] = ()) -> dict:
        """``podman run -d`` on ``network``; returns ``podman inspect`` of the container."""
        publish = [a for p in ports for a in ("-p", p)]
        out = self("run", "-d", "--name", name, "--network", network,
                   "--cgroup-parent", self.cgroup_parent, *publish,
                   "--rootfs", str(rootfs), *cmd)
        self.containers[name] = out.stdout.strip().splitlines()[-1]
        self.networks[name] = network
        info = self.inspect(name)
        self.sandboxes[name] = info["NetworkSettings"]["SandboxKey"]
        return info

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def exec(self, name: str, *cmd: str, timeout: float = 15):
        return self("exec", name, *cmd, check=False, timeout=timeout)

    def remove(self, name: str) -> None:
        # -t 0: httpd as PID 1 has no SIGTERM handler, so a graceful stop
        # would wait the full 10 s before SIGKILL.
        self("rm", "-f", "-t", "0", name)

    def cache_file(self, name: str) -> pathlib.Path:
        return LIBCNI_CACHE / f"{self.networks[name]}-{self.containers[name]}-eth0"

    def _track_all(self) -> None:
        """Learn IDs and sandboxes of containers a failed ``start`` did not return."""
        out = self("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}", check=False)
        for line in out.stdout.splitlines():
            cid, _, name = line.partition(" ")
            if name and name not in self.containers:
                self.containers[name] = cid
                state = self("inspect", name, check=False)
                if state.returncode == 0:
                    key = json.loads(state.stdout)[0]["NetworkSettings"]["SandboxKey"]
                    if key:
                        self.sandboxes[name] = key

    def cleanup(self) -> None:
        """Remove every container, process, netns, cgroup, mount and cache file this made."""
        self._track_all()
        self("rm", "-a", "-f", "-t", "0", check=False)
        for sandbox in self.sandboxes.values():
            if os.path.exists(sandbox):
                run(["ip", "netns", "del", os.path.basename(sandbox)], check=False)
        for cid in self.containers.values():
            for net in set(self.networks.values()):
                (LIBCNI_CACHE / f"{net}-{cid}-eth0").unlink(missing_ok=True)
        # conmon and the container live in cgroups under our private parent:
        # whatever is still in them was started by this test.
        cgroups.kill_and_remove(self.cgroup_parent)
        for cid in self.containers.values():
            # runc keeps its state in the host's /run/runc, not under our runroot.
            if (RUNC_STATE / cid).exists():
                run(["runc", "delete", "--force", cid], check=False)
        self._unmount_under_work()
        shutil.rmtree(self.work, ignore_errors=True)

    def _unmount_under_work(self) -> None:
        work = str(self.work)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p == work or p.startswith(work + "/")),
                            key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)

    def leftover_cgroups(self) -> list[str]:
        return [str(d) for d in cgroups.dirs(self.cgroup_parent)]
