"""A raw netlink socket that writes in batches: many requests to a datagram, one ack each.

The kernel handles the messages of one datagram in order and answers each
request that asks for an acknowledgement, so a batch costs one round trip and
one refused request names itself while the rest still apply. Standard
library only; the socket belongs to the network namespace of the thread that
opened it, for its whole life.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Iterable, Iterator

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLA_TYPE_MASK = 0x3FFF
BATCH = 256                              # requests per datagram: acks fit any receive buffer
_HEADER = struct.Struct("=IHHII")


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in ``data``, flag bits cleared."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        yield kind & NLA_TYPE_MASK, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


class NetlinkSocket:
    def __init__(self, protocol: int):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _send(self, messages: Iterable[tuple[int, int, bytes]]) -> int:
        """(type, flags, payload) each, in one datagram; the first sequence number used."""
        first, data = self._seq + 1, []
        for kind, flags, payload in messages:
            self._seq += 1
            data.append(_HEADER.pack(16 + len(payload), kind, flags, self._seq, 0) + payload)
        self._sock.send(b"".join(data))
        return first

    def _replies(self) -> Iterator[tuple[int, int, bytes]]:
        """Every message the kernel sends back, as (type, seq, payload)."""
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
                yield kind, seq, data[offset + 16:offset + length]
                offset += (length + 3) & ~3

    def dump(self, kind: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP,
             what: str = "dump") -> list[tuple[int, bytes]]:
        """The answers to one request (a dump, or a get without NLM_F_DUMP): (type, payload)."""
        seq = self._send([(kind, flags, payload)])
        out = []
        for reply, rseq, body in self._replies():
            if rseq != seq:
                continue
            if reply == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise OSError(code, f"{what}: {errno.errorcode.get(code, code)}")
                return out
            if reply == NLMSG_DONE:
                return out
            out.append((reply, body))
            if not flags & NLM_F_DUMP:
                return out
        return out

    def write(self, requests: list[tuple[int, int, bytes]]) -> list[int]:
        """Send (type, flags, payload) requests in order, each acknowledged; each one's
        errno (0: done)."""
        results: list[int] = []
        for start in range(0, len(requests), BATCH):
            chunk = requests[start:start + BATCH]
            first = self._send((kind, flags | NLM_F_REQUEST | NLM_F_ACK, payload)
                               for kind, flags, payload in chunk)
            codes: dict[int, int] = {}
            for reply, seq, body in self._replies():
                if reply == NLMSG_ERROR and first <= seq < first + len(chunk):
                    codes[seq] = -struct.unpack_from("=i", body)[0]
                    if len(codes) == len(chunk):
                        break
            results += [codes[first + i] for i in range(len(chunk))]
        return results
