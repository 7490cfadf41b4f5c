"""Real packets between namespaces the tests made."""
from __future__ import annotations

import socket


def tcp_exchange(client_ns, server_ns, server_ip: str, port: int = 8080) -> str:
    """One real TCP round trip (ping/pong) from ``client_ns`` to ``server_ip`` in
    ``server_ns``; returns the source address the server saw."""
    family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
    server = server_ns.socket(family)
    client = client_ns.socket(family)
    try:
        server.bind((server_ip, port))
        server.listen()
        server.settimeout(5)
        client.settimeout(5)
        client.connect(server.getsockname()[:2])
        conn, peer = server.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.sendall(b"pong")
            assert client.recv(4) == b"pong"
        return peer[0]
    finally:
        client.close()
        server.close()


def read_line(sock) -> str:
    """Read until the peer's newline (or its close); the text without it."""
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        answer += chunk
    return answer.decode().strip()


def connect_through(client_ns, server_ns, listen: tuple[str, int], connect: tuple[str, int]) -> None:
    """A TCP connection from ``client_ns`` to ``connect`` must arrive at a listener on
    ``listen`` in ``server_ns`` (a hostPort, a NodePort: something translates the address)."""
    server = server_ns.socket()
    client = client_ns.socket()
    try:
        server.bind(listen)
        server.listen()
        server.settimeout(5)
        client.settimeout(5)
        client.connect(connect)
        conn, _ = server.accept()
        conn.close()
    finally:
        client.close()
        server.close()
