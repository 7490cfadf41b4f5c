"""GobgpdProcess with stand-in binaries and an injected API probe (no gobgpd)."""
import logging
import os
import signal
import socket
import stat
import time

import pytest

from proxyd.routing.gobgpd import (GobgpdError, GobgpdProcess, admin_port_refusal,
                                   runtime_dir)


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "fake-gobgpd"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _answers_after(n: int):
    calls = []

    def probe(target, timeout):
        calls.append(target)
        return len(calls) > n
    probe.calls = calls
    return probe


def _answers_while_alive(holder: list):
    return lambda target, timeout: bool(holder) and holder[0].alive


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / "run" / "gobgp.sock")


def test_api_only_on_a_unix_socket_and_pprof_is_off(sock):
    argv = GobgpdProcess(sock).argv()
    assert argv[0] == "gobgpd"
    assert f"--api-hosts=unix://{sock}" in argv and "--pprof-disable" in argv
    assert not any(a.startswith(("-f", "--config-file")) for a in argv)
    assert GobgpdProcess(sock).api_target == f"unix:{sock}"
    with pytest.raises(ValueError, match="absolute path"):
        GobgpdProcess("gobgp.sock")


def test_runtime_dir_is_systemds_or_run_kube_router():
    assert runtime_dir({}) == "/run/kube-router"
    assert runtime_dir({"RUNTIME_DIRECTORY": "/run/kube-router:/run/other"}) == "/run/kube-router"
    assert runtime_dir({"RUNTIME_DIRECTORY": "/tmp/node-a"}) == "/tmp/node-a"


def test_the_tcp_admin_port_is_refused_by_name():
    assert admin_port_refusal(0, "/run/kube-router/gobgp.sock") == ""
    message = admin_port_refusal(50051, "/run/kube-router/gobgp.sock")
    assert "--gobgp-admin-port=50051 is not served" in message
    assert "gobgp --target unix:///run/kube-router/gobgp.sock" in message


def test_start_waits_for_the_api_then_stop_terminates(tmp_path, sock, caplog):
    probe = _answers_after(2)
    proc = GobgpdProcess(sock, binary=_script(tmp_path, "echo hello from gobgpd; exec sleep 60"),
                         probe=probe)
    with caplog.at_level(logging.INFO):
        proc.start()
    try:
        assert proc.alive and len(probe.calls) == 3
        assert probe.calls[0] == f"unix:{sock}"
        assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
        assert proc.rss_bytes() > 0
    finally:
        proc.stop()
    assert not proc.alive and proc.returncode == -signal.SIGTERM
    # Output went to the daemon's log, not to a file.
    assert "gobgpd: hello from gobgpd" in caplog.text and proc.log_tail() == "hello from gobgpd"
    assert os.listdir(tmp_path / "run") == []
    assert proc.rss_bytes() is None
    proc.stop()


def test_a_hard_stop_kills_without_sigterm(tmp_path, sock):
    ready = tmp_path / "ready"
    proc = GobgpdProcess(sock, binary=_script(tmp_path, f"touch {ready}; exec sleep 60"),
                         probe=lambda target, timeout: ready.exists())
    proc.start()
    proc.stop(hard=True)
    assert proc.returncode == -signal.SIGKILL


def test_early_exit_reports_status_and_log(tmp_path, sock):
    binary = _script(tmp_path, 'echo "flag provided but not defined: $1" >&2; exit 3')
    proc = GobgpdProcess(sock, binary=binary, probe=_answers_after(100))
    with pytest.raises(GobgpdError) as err:
        proc.start()
    message = str(err.value)
    assert f"exited with status 3 before its API answered on {sock}" in message
    assert f"flag provided but not defined: --api-hosts=unix://{sock}" in message
    assert not proc.alive


def test_api_that_never_answers_times_out_with_log_and_is_stopped(tmp_path, sock):
    proc = GobgpdProcess(sock, binary=_script(tmp_path, "echo listening elsewhere; exec sleep 60"),
                         probe=_answers_after(10**6), start_timeout=0.3)
    with pytest.raises(GobgpdError, match=r"did not answer within 0.3s; log:\nlistening elsewhere"):
        proc.start()
    assert not proc.alive and proc.returncode == -signal.SIGTERM


def test_sigterm_ignored_means_sigkill(tmp_path, sock):
    ready = tmp_path / "ready"
    binary = _script(tmp_path, f"trap '' TERM; touch {ready}; exec sleep 60")
    proc = GobgpdProcess(sock, binary=binary, probe=lambda target, timeout: ready.exists(),
                         stop_timeout=0.3)
    proc.start()
    proc.stop()
    assert proc.returncode == -signal.SIGKILL


def test_missing_binary(tmp_path, sock):
    proc = GobgpdProcess(sock, binary=str(tmp_path / "no-such-gobgpd"))
    with pytest.raises(GobgpdError, match="cannot run"):
        proc.start()


def test_a_stale_socket_is_removed_but_a_live_one_refused(tmp_path, sock):
    os.makedirs(os.path.dirname(sock))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)
    stale.close()                                  # the file stays, nobody listens
    ran = tmp_path / "ran"
    proc = GobgpdProcess(sock, binary=_script(tmp_path, f"touch {ran}; exec sleep 60"),
                         probe=lambda target, timeout: ran.exists())
    proc.start()
    proc.stop()
    assert ran.exists()
    ran.unlink()
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    open(sock, "w").close()
    proc = GobgpdProcess(sock, binary=_script(tmp_path, f"touch {ran}; exec sleep 60"),
                         probe=lambda target, timeout: True)
    with pytest.raises(GobgpdError, match=f"something already answers .* {sock}"):
        proc.start()
    assert proc.pid is None and not ran.exists()


def test_no_second_start_while_running_but_restart_after_exit(tmp_path, sock):
    holder: list = []
    proc = GobgpdProcess(sock, binary=_script(tmp_path, "exec sleep 60"),
                         probe=_answers_while_alive(holder))
    holder.append(proc)
    proc.start()
    try:
        first = proc.pid
        with pytest.raises(GobgpdError, match="already running"):
            proc.start()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while proc.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.returncode == -signal.SIGKILL
        proc.start()
        assert proc.alive and proc.pid != first
    finally:
        proc.stop()
