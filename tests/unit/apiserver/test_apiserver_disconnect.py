"""A client that hangs up mid-request costs one log line, never a socketserver traceback."""
import http.client
import logging
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

LOGGER = "krsim.apiserver.http"
ROOT = pathlib.Path(__file__).resolve().parents[3]


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a killed process or a client dropping unread data does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _gone_lines(caplog, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records
                 if r.name == LOGGER and "went away" in r.getMessage()]
        if len(lines) >= count:
            time.sleep(0.3)                 # and nothing more comes after it
            return [r.getMessage() for r in caplog.records if r.name == LOGGER]
        time.sleep(0.02)
    raise AssertionError(f"no 'went away' line within {timeout}s: {caplog.text}")


@pytest.fixture
def quiet_log(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def test_a_watch_dropped_mid_stream_is_one_line(server_factory, quiet_log, capfd):
    server = server_factory(bookmark_interval=0.05)
    sock = _connect(server)
    path = "/api/v1/namespaces?watch=true&allowWatchBookmarks=true"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    while b'"type":"ADDED"' not in received:      # the stream is flowing
        received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    _reset(sock)
    lines = _gone_lines(quiet_log, 1)
    assert len(lines) == 1, lines
    assert "went away during GET " + path in lines[0]
    assert "Traceback" not in capfd.readouterr().err
    assert "Traceback" not in quiet_log.text


def test_a_client_gone_between_requests_is_one_line(server_factory, quiet_log, capfd):
    server = server_factory()
    sock = _connect(server)
    sock.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200 and b'"NamespaceList"' in response.read()
    _reset(sock)                                   # while the server reads the next request
    half = _connect(server)
    half.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHo")
    time.sleep(0.1)
    _reset(half)                                   # in the middle of the headers
    lines = _gone_lines(quiet_log, 2)
    assert len(lines) == 2 and all("went away: " in line for line in lines), lines
    assert "Traceback" not in capfd.readouterr().err


def test_the_server_process_prints_one_line_on_stderr(tmp_path):
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "krsim.apiserver", "--port=0"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:"), url
        host, port = url.removeprefix("http://").rsplit(":", 1)
        half = socket.create_connection((host, int(port)), timeout=5)
        half.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHo")
        time.sleep(0.1)
        _reset(half)
        deadline = time.monotonic() + 5
        while "went away" not in err_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    lines = err_path.read_text().splitlines()
    assert len(lines) == 1 and "went away: Connection reset by peer" in lines[0], lines
