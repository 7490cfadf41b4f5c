"""Network namespaces the simulator and the tests create, use and always remove.

Every namespace made here carries a prefix (``krsim-`` for the simulator,
``krt-`` for tests) so that leaks can be found and nothing outside that prefix
is ever touched.
"""
from __future__ import annotations

import itertools
import os
import shlex
import signal
import socket
import subprocess
import threading
import time

from lowlevel import netns

PREFIX = "krsim-"
_counter = itertools.count()


def unique_name(role: str, prefix: str = PREFIX) -> str:
    """A namespace name unique across processes and runs (max 32 chars)."""
    return f"{prefix}{os.getpid() % 100000}-{next(_counter)}-{role}"[:32]


def run(cmd, *, check: bool = True, timeout: float = 30, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command on the test host; a failure names the command and its stderr."""
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          input=input, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {shlex.join(cmd)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")
    return proc


class Netns:
    """One named network namespace (``/run/netns/<name>``) with loopback up."""

    def __init__(self, role: str = "ns", prefix: str = PREFIX):
        self.name = unique_name(role, prefix)
        run(["ip", "netns", "add", self.name])
        self.path = f"/run/netns/{self.name}"
        self.exec(["ip", "link", "set", "lo", "up"])
        self._procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Netns({self.name})"

    def argv(self, cmd) -> list[str]:
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        return ["ip", "netns", "exec", self.name, *cmd]

    def exec(self, cmd, **kw) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (``ip netns exec``)."""
        return run(self.argv(cmd), **kw)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return run(self.argv(["sh", "-ec", script]), **kw)

    def popen(self, cmd, **kw) -> subprocess.Popen:
        """Start a long-running process inside the namespace; killed at cleanup."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.argv(cmd), start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def call(self, fn, *args, **kwargs):
        """Call ``fn`` in a thread that has entered this namespace.

        Sockets created there stay in this namespace for their whole life, so
        a test can talk through namespaces from its own process.
        """
        box: dict = {}

        def target():
            try:
                netns.enter(self.path)
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed back to the caller below
                box["error"] = exc

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM) -> socket.socket:
        return self.call(socket.socket, family, type)

    def sysctl(self, key: str, value) -> None:
        self.exec(["sysctl", "-qw", f"{key}={value}"])

    def delete(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream:
                    stream.close()
        # Anything else still running in the namespace was started by a test.
        pids = run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        run(["ip", "netns", "del", self.name], check=False)


def veth_pair(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    tmp = f"kv{os.getpid() % 10000}{next(_counter)}"[:15]
    run(["ip", "link", "add", tmp, "netns", a.name, "type", "veth", "peer", "name", b_if,
         "netns", b.name])
    a.exec(["ip", "link", "set", tmp, "name", a_if])
    a.exec(["ip", "link", "set", a_if, "up"])
    b.exec(["ip", "link", "set", b_if, "up"])


def leaked_namespaces(prefix: str = PREFIX) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return sorted(line.split()[0] for line in out.splitlines()
                  if line.startswith(prefix))


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
