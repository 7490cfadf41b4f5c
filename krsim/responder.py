"""A pod's listener: answers every TCP/SCTP connection and UDP datagram with the pod's name.

Run inside the pod's namespace: ``python -m krsim.responder ns/pod --tcp 80 --udp 53``
(``--sctp 9`` where the kernel has SCTP).
Probes read the answer to learn which pod replied (load balancing, affinity, DSR).
"""
from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys


def serve(name: str, tcp_ports: list[int], udp_ports: list[int], ready=None,
          sctp_ports: list[int] = ()) -> None:
    reply = (name + "\n").encode()
    sel = selectors.DefaultSelector()
    streams = [(p, 0) for p in tcp_ports] + [(p, socket.IPPROTO_SCTP) for p in sctp_ports]
    for port, proto in streams:
        for family, addr in ((socket.AF_INET6, "::"),):
            s = socket.socket(family, socket.SOCK_STREAM, proto)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6 on one socket
            s.bind((addr, port))
            s.listen(128)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, "tcp")
    for port in udp_ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "udp")
    if ready:
        ready()
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            try:
                if key.data == "tcp":
                    conn, _ = sock.accept()
                    with conn:
                        conn.settimeout(1)
                        conn.sendall(reply)
                else:
                    _, peer = sock.recvfrom(512)
                    sock.sendto(reply, peer)
            except OSError:
                continue  # a peer that went away must not stop the listener


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--tcp", type=int, action="append", default=[])
    p.add_argument("--udp", type=int, action="append", default=[])
    p.add_argument("--sctp", type=int, action="append", default=[])
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # "ready" on stdout lets the caller wait for the sockets instead of sleeping.
    serve(a.name, a.tcp, a.udp, ready=lambda: print("ready", flush=True), sctp_ports=a.sctp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
