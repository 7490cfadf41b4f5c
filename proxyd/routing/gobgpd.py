"""gobgpd as a child process of the daemon: start, wait for its API, stop.

kube-router embeds GoBGP's server in its own binary; here Debian's gobgpd runs
beside the daemon with no config file, and everything (global config, peers,
paths) is set over its gRPC API, as kube-router does with the embedded server.

The API only ever listens on 127.0.0.1. BGP's own listen port and addresses
are set later by StartBgp (``bgp.BgpSpeaker.start``).

Restarting after a crash is the caller's decision: ``alive`` and ``returncode``
tell it happened, ``start()`` may be called again, and the new gobgpd starts
empty (global config, peers and paths must be sent again).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable

import grpc

from .gobgp_api import gobgp_pb2 as pb
from .gobgp_api import gobgp_pb2_grpc as pb_grpc

API_HOST = "127.0.0.1"
LOG_TAIL_BYTES = 2000


class GobgpdError(RuntimeError):
    """gobgpd did not start, or its API did not answer; the message ends with its log."""


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (in the caller's network namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((API_HOST, 0))
        return sock.getsockname()[1]


def admin_api_port(gobgp_admin_port: int,
                   pick_free: Callable[[], int] = free_loopback_port) -> int:
    """The port gobgpd's API listens on, from kube-router's ``--gobgp-admin-port``.

    In kube-router 0 means "no gRPC server". This daemon drives gobgpd only
    through gRPC, so 0 means "a private port": a free one on 127.0.0.1, known
    only to this process.
    """
    if not 0 <= gobgp_admin_port <= 65535:
        raise ValueError(f"--gobgp-admin-port must be 0..65535, not {gobgp_admin_port}")
    return gobgp_admin_port or pick_free()


def api_answers(target: str, timeout: float) -> bool:
    """True when a GetBgp call to ``target`` succeeds within ``timeout`` seconds."""
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.GobgpApiStub(channel).GetBgp(pb.GetBgpRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the daemon dies, even by SIGKILL, so no
    gobgpd outlives its kube-router (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _default_runner(argv: list[str], **kwargs) -> subprocess.Popen:
    # The death signal follows the thread that forked: the controller's runner thread,
    # which lives as long as the daemon.
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


class GobgpdProcess:
    """One gobgpd child process with its gRPC API on ``127.0.0.1:api_port``.

    ``netns_runner(argv, stdout=..., stderr=...)`` starts the process (default:
    ``subprocess.Popen`` in a new session); a runner may wrap ``argv`` (for
    example with ``ip netns exec``) as long as the returned process is gobgpd
    itself. ``api_target`` is where *this* process reaches the API; it only
    differs from ``127.0.0.1:api_port`` when gobgpd runs in another network
    namespace than its caller.
    """

    def __init__(self, api_port: int, *, binary: str = "gobgpd", log_path: str | None = None,
                 netns_runner: Callable[..., subprocess.Popen] | None = None,
                 api_target: str | None = None, log_level: str = "info",
                 start_timeout: float = 15.0, stop_timeout: float = 5.0,
                 probe: Callable[[str, float], bool] = api_answers):
        if not 0 < api_port <= 65535:
            raise ValueError(f"gobgpd needs a real API port (1..65535), not {api_port}: "
                             "see admin_api_port() for kube-router's 0")
        self.api_port = api_port
        self.api_target = api_target or f"{API_HOST}:{api_port}"
        self.binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._runner = netns_runner or _default_runner
        self._probe = probe
        self._own_log = log_path is None
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        # Without --pprof-disable gobgpd opens a pprof HTTP server on localhost:6060.
        return [self.binary, f"--api-hosts={API_HOST}:{self.api_port}", "--pprof-disable",
                "--log-plain", f"--log-level={self.log_level}"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """gobgpd's exit status once it has exited (negative: killed by that signal)."""
        return self._proc.poll() if self._proc else None

    def start(self) -> None:
        """Start gobgpd and return once its API answers; raise GobgpdError if it does not."""
        if self.alive:
            raise GobgpdError(f"gobgpd already running (pid {self.pid})")
        # Another gobgpd (say, one orphaned by a crashed daemon) holding the port would
        # answer the readiness probe while ours fails to bind: refuse to start instead.
        if self._probe(self.api_target, 0.5):
            raise GobgpdError(f"something already answers gobgpd's API on {self.api_target}")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="gobgpd-", suffix=".log")
            os.close(fd)
        with open(self.log_path, "ab") as log:
            try:
                self._proc = self._runner(self.argv(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
            except OSError as exc:
                self.stop()   # removes a log file made above
                raise GobgpdError(f"cannot run {self.binary}: {exc}") from exc
        try:
            self._wait_for_api()
        except GobgpdError:
            self.stop()
            raise

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.alive:
                raise GobgpdError(f"gobgpd exited with status {self.returncode} before its "
                                  f"API answered on {self.api_target}; log:\n{self.log_tail()}")
            if self._probe(self.api_target, 0.5):
                return
            if time.monotonic() > deadline:
                raise GobgpdError(f"gobgpd's API on {self.api_target} did not answer within "
                                  f"{self.start_timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``. Safe to call at any time, repeatedly."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        if self._own_log and self.log_path and not self.alive:
            try:
                os.unlink(self.log_path)
            except FileNotFoundError:
                pass
            self.log_path = None

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def log_tail(self, size: int = LOG_TAIL_BYTES) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - size))
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int | None:
        """gobgpd's resident memory, from /proc; None when it is not running."""
        if not self.alive:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except FileNotFoundError:
            return None
        return None

    def __enter__(self) -> "GobgpdProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
