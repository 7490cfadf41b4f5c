"""GobgpdProcess with stand-in binaries and an injected API probe (no gobgpd)."""
import os
import signal
import socket
import stat
import time

import pytest

from proxyd.routing.gobgpd import GobgpdError, GobgpdProcess, admin_api_port, free_loopback_port


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


def test_api_listens_on_loopback_only_and_pprof_is_off():
    argv = GobgpdProcess(50051).argv()
    assert argv[0] == "gobgpd"
    assert "--api-hosts=127.0.0.1:50051" in argv and "--pprof-disable" in argv
    assert not any(a.startswith(("-f", "--config-file")) for a in argv)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_must_be_real(port):
    with pytest.raises(ValueError, match="real API port"):
        GobgpdProcess(port)


def test_admin_port_zero_means_a_private_free_port():
    assert admin_api_port(50051, pick_free=lambda: 1) == 50051
    assert admin_api_port(0, pick_free=lambda: 41234) == 41234
    assert 0 < admin_api_port(0) < 65536
    with pytest.raises(ValueError):
        admin_api_port(70000)


def test_free_loopback_port_is_bindable():
    port = free_loopback_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_waits_for_the_api_then_stop_terminates(tmp_path):
    probe = _answers_after(3)
    proc = GobgpdProcess(50051, binary=_script(tmp_path, "exec sleep 60"), probe=probe)
    proc.start()
    try:
        assert proc.alive and len(probe.calls) == 4   # one before starting, three waiting
        assert probe.calls[0] == "127.0.0.1:50051"
        assert proc.rss_bytes() > 0
        log = proc.log_path
        assert os.path.exists(log)
    finally:
        proc.stop()
    assert not proc.alive and proc.returncode == -signal.SIGTERM
    assert not os.path.exists(log), "a log file the process made itself is removed at stop"
    assert proc.rss_bytes() is None
    proc.stop()


def test_early_exit_reports_status_and_log(tmp_path):
    binary = _script(tmp_path, 'echo "flag provided but not defined: $1" >&2; exit 3')
    proc = GobgpdProcess(50051, binary=binary, probe=_answers_after(100))
    with pytest.raises(GobgpdError) as err:
        proc.start()
    message = str(err.value)
    assert "exited with status 3 before its API answered on 127.0.0.1:50051" in message
    assert "flag provided but not defined: --api-hosts=127.0.0.1:50051" in message
    assert not proc.alive


def test_api_that_never_answers_times_out_with_log_and_is_stopped(tmp_path):
    log = tmp_path / "gobgpd.log"
    proc = GobgpdProcess(50051, binary=_script(tmp_path, "echo listening elsewhere; exec sleep 60"),
                         probe=_answers_after(10**6), start_timeout=0.3, log_path=str(log))
    with pytest.raises(GobgpdError, match=r"did not answer within 0.3s; log:\nlistening elsewhere"):
        proc.start()
    assert not proc.alive and proc.returncode == -signal.SIGTERM
    assert log.exists(), "a log file the caller named is kept"


def test_sigterm_ignored_means_sigkill(tmp_path):
    ready = tmp_path / "ready"
    binary = _script(tmp_path, f"trap '' TERM; touch {ready}; exec sleep 60")
    proc = GobgpdProcess(50051, binary=binary, probe=lambda target, timeout: ready.exists(),
                         stop_timeout=0.3)
    proc.start()
    proc.stop()
    assert proc.returncode == -signal.SIGKILL


def test_missing_binary(tmp_path):
    proc = GobgpdProcess(50051, binary=str(tmp_path / "no-such-gobgpd"))
    with pytest.raises(GobgpdError, match="cannot run"):
        proc.start()
    assert proc.log_path is None, "the log file made for it is removed"


def test_another_gobgpd_on_the_port_is_refused_before_starting(tmp_path):
    ran = tmp_path / "ran"
    proc = GobgpdProcess(50051, binary=_script(tmp_path, f"touch {ran}; exec sleep 60"),
                         probe=lambda target, timeout: True)
    with pytest.raises(GobgpdError, match="something already answers .* 127.0.0.1:50051"):
        proc.start()
    assert proc.pid is None and not ran.exists()


def test_no_second_start_while_running_but_restart_after_exit(tmp_path):
    holder: list = []
    proc = GobgpdProcess(50051, binary=_script(tmp_path, "exec sleep 60"),
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
