"""gobgpd as a child process of the daemon: start, wait for its API, stop.

kube-router embeds GoBGP's server in its own binary; here Debian's gobgpd runs
beside the daemon with no config file, and everything (global config, peers,
paths) is set over its gRPC API, as kube-router does with the embedded server.

The API listens only on a unix socket in the daemon's runtime directory
(``runtime_dir()``, mode 0700): nothing but root on this node can reach it,
whatever reaches the node's 127.0.0.1. gobgpd's API is unauthenticated and
can add peers and paths, so it is never on TCP (kube-router's
``--gobgp-admin-port``, on 127.0.0.1, is refused by name: see
``admin_port_refusal``). Operators reach it with ``gobgp --target
unix:///run/kube-router/gobgp.sock``. BGP's own listen port and addresses
are set later by StartBgp (``bgp.BgpSpeaker.start``).

gobgpd's output goes through a pipe into the daemon's log (``gobgpd: ...``
lines), with the last lines kept for error messages: no log file is left
anywhere when either process dies.

Restarting after a crash is the caller's decision: ``alive`` and ``returncode``
tell it happened, ``start()`` may be called again, and the new gobgpd starts
empty (global config, peers and paths must be sent again).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Callable

import grpc

from .gobgp_api import gobgp_pb2 as pb
from .gobgp_api import gobgp_pb2_grpc as pb_grpc

DEFAULT_RUNTIME_DIR = "/run/kube-router"
SOCKET_NAME = "gobgp.sock"
LOG_TAIL_LINES = 40

log = logging.getLogger(__name__)


class GobgpdError(RuntimeError):
    """gobgpd did not start, or its API did not answer; the message ends with its log."""


def runtime_dir(environ=os.environ) -> str:
    """The daemon's private directory: systemd's $RUNTIME_DIRECTORY (the unit's
    RuntimeDirectory=kube-router), else /run/kube-router."""
    return environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or DEFAULT_RUNTIME_DIR


def admin_port_refusal(gobgp_admin_port: int, socket_path: str) -> str:
    """What the daemon logs about kube-router's --gobgp-admin-port ("" for 0, which
    kube-router also takes as "no gRPC server on TCP")."""
    if not gobgp_admin_port:
        return ""
    return (f"--gobgp-admin-port={gobgp_admin_port} is not served: gobgpd's API is "
            f"unauthenticated, so this build serves it only on the root-only unix socket "
            f"{socket_path}, never on TCP (use: gobgp --target unix://{socket_path} ...)")


def api_answers(target: str, timeout: float) -> bool:
    """True when a GetBgp call to ``target`` succeeds within ``timeout`` seconds."""
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.GobgpApiStub(channel).GetBgp(pb.GetBgpRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the daemon dies, so no gobgpd outlives
    its kube-router (prctl PR_SET_PDEATHSIG). SIGKILL, not SIGTERM: a gobgpd that
    terminates cleanly sends every peer a Cease NOTIFICATION, and peers drop our
    routes at once even with graceful restart negotiated; a dead one only closes
    its connections, which graceful restart rides out."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _default_runner(argv: list[str], **kwargs) -> subprocess.Popen:
    # The death signal follows the thread that forked: the controller's runner thread,
    # which lives as long as the daemon.
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


class GobgpdProcess:
    """One gobgpd child process with its gRPC API on the unix socket ``socket_path``.

    ``netns_runner(argv, stdout=..., stderr=...)`` starts the process (default:
    ``subprocess.Popen`` in a new session); a runner may wrap ``argv`` (for
    example with ``ip netns exec``) as long as the returned process is gobgpd
    itself. A unix socket is reached by its path from any network namespace.
    """

    def __init__(self, socket_path: str, *, binary: str = "gobgpd",
                 netns_runner: Callable[..., subprocess.Popen] | None = None,
                 log_level: str = "info", start_timeout: float = 15.0,
                 stop_timeout: float = 5.0, probe: Callable[[str, float], bool] = api_answers,
                 logger: logging.Logger = log):
        if not os.path.isabs(socket_path):
            raise ValueError(f"gobgpd's API socket needs an absolute path, not {socket_path!r}")
        self.socket_path = socket_path
        self.api_target = f"unix:{socket_path}"
        self.binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._runner = netns_runner or _default_runner
        self._probe = probe
        self._logger = logger
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        # Without --pprof-disable gobgpd opens a pprof HTTP server on localhost:6060.
        return [self.binary, f"--api-hosts=unix://{self.socket_path}", "--pprof-disable",
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
        self._prepare_socket()
        self._tail.clear()
        try:
            self._proc = self._runner(self.argv(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise GobgpdError(f"cannot run {self.binary}: {exc}") from exc
        self._reader = threading.Thread(target=self._read_output, args=(self._proc.stdout,),
                                        name="gobgpd-log", daemon=True)
        self._reader.start()
        try:
            self._wait_for_api()
        except GobgpdError:
            self.stop()
            raise

    def _prepare_socket(self) -> None:
        """A private directory (0700) and no stale socket left by a gobgpd that died."""
        directory = os.path.dirname(self.socket_path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        # Another gobgpd (one a crashed daemon left behind) would answer the readiness
        # probe while ours fails to listen: refuse to start instead.
        if os.path.exists(self.socket_path):
            if self._probe(self.api_target, 0.5):
                raise GobgpdError(f"something already answers gobgpd's API on "
                                  f"{self.socket_path}")
            os.unlink(self.socket_path)

    def _read_output(self, stream) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                self._tail.append(line)
                self._logger.info("gobgpd: %s", line)

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.alive:
                self._drain()
                raise GobgpdError(f"gobgpd exited with status {self.returncode} before its "
                                  f"API answered on {self.socket_path}; log:\n{self.log_tail()}")
            if self._probe(self.api_target, 0.5):
                return
            if time.monotonic() > deadline:
                raise GobgpdError(f"gobgpd's API on {self.socket_path} did not answer within "
                                  f"{self.start_timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def _drain(self, timeout: float = 2.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (SIGKILL after ``stop_timeout``), or SIGKILL at once when ``hard``.

        A hard stop sends peers no NOTIFICATION: with graceful restart they keep
        our routes while this node's daemon restarts. Safe to call at any time.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        self._drain()
        if proc is not None and proc.poll() is not None:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def log_tail(self) -> str:
        """gobgpd's last lines of output."""
        return "\n".join(self._tail)

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
