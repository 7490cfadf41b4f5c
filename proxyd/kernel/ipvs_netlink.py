"""IPVS over generic netlink, spoken directly: batched writes and the two dumps.

The messages are IPVS's generic netlink ABI (include/uapi/linux/ip_vs.h, family
"IPVS", version 1), as ipvsadm's libipvs sends them. Writes go out in batches
(lowlevel/netlink.py): one refused request names itself and the rest still
apply. pyroute2's IPVS requests took ~22 ms of Python each under the VM's TCG
(2,600 of them for 200 services x 5 endpoints: 58 s) and one socket round
trip apiece; a table of thousands of destinations can afford neither.

As net/netfilter/ipvs/ip_vs_ctl.c parses them:
- A service add or set needs the full entry: scheduler, flags, timeout and
  netmask (0xffffffff for IPv4 as ipvsadm sends it, the prefix length 128 for
  IPv6), else EINVAL; a destination add or set needs forwarding method,
  weight and both thresholds.
- Addresses travel as the 16 bytes of ``union nf_inet_addr``; ports in network
  order, everything else in host order.
"""
from __future__ import annotations

import errno
import socket
import struct

from lowlevel.netlink import NLM_F_REQUEST, NetlinkSocket, attr as _attr, attrs as _attrs

NETLINK_GENERIC = 16
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
IPVS_GENL_VERSION = 1

COMMANDS = {("service", "add"): 1, ("service", "set"): 2, ("service", "del"): 3,
            ("service", "dump"): 4, ("dest", "add"): 5, ("dest", "set"): 6,
            ("dest", "del"): 7, ("dest", "dump"): 8}
COMMAND_NAMES = {v: k for k, v in COMMANDS.items()}
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
# (attribute number, name, struct format or "addr"/"str") per nested attribute set
SERVICE_ATTRS = ((1, "af", "=H"), (2, "protocol", "=H"), (3, "addr", "addr"), (4, "port", "!H"),
                 (5, "fwmark", "=I"), (6, "sched_name", "str"), (7, "flags", "=II"),
                 (8, "timeout", "=I"), (9, "netmask", "=I"))
DEST_ATTRS = ((1, "addr", "addr"), (2, "port", "!H"), (3, "fwd_method", "=I"),
              (4, "weight", "=I"), (5, "u_threshold", "=I"), (6, "l_threshold", "=I"),
              (7, "active_conns", "=I"), (8, "inact_conns", "=I"), (11, "addr_family", "=H"))
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _encode(table, values: dict) -> bytes:
    out = b""
    for number, name, form in table:
        if name not in values:
            continue
        value = values[name]
        if form == "addr":
            family = AF[6 if ":" in value else 4]
            payload = socket.inet_pton(family, value).ljust(16, b"\0")
        elif form == "str":
            payload = value.encode() + b"\0"
        else:
            payload = struct.pack(form, *(value if isinstance(value, tuple) else (value,)))
        out += _attr(number, payload)
    return out


def _decode(table, data: bytes, family: int | None) -> dict:
    raw = dict(_attrs(data))
    out = {}
    for number, name, form in table:
        if number not in raw:
            continue
        payload = raw[number]
        if form == "str":
            out[name] = payload.split(b"\0", 1)[0].decode()
        elif form != "addr":
            value = struct.unpack(form, payload[:struct.calcsize(form)])
            out[name] = value if len(value) > 1 else value[0]
    number = next(n for n, name, _ in table if name == "addr")
    if number in raw:
        v6 = out.get("addr_family", out.get("af", family)) == socket.AF_INET6
        out["addr"] = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET,
                                       raw[number][:16 if v6 else 4])
    return out


def request(kind: str, command: str, service: dict, dest: dict | None = None) -> bytes:
    """One request's generic netlink payload: header, service and optional destination."""
    body = _attr(CMD_ATTR_SERVICE, _encode(SERVICE_ATTRS, service))
    if dest is not None:
        body += _attr(CMD_ATTR_DEST, _encode(DEST_ATTRS, dest))
    return struct.pack("=BBH", COMMANDS[(kind, command)], IPVS_GENL_VERSION, 0) + body


def parse(payload: bytes) -> tuple[tuple[str, str], dict, dict | None]:
    """A request or dump answer: ((kind, command), service attributes, dest attributes)."""
    command = payload[0]
    nested = dict(_attrs(payload[4:]))
    service = _decode(SERVICE_ATTRS, nested.get(CMD_ATTR_SERVICE, b""), None)
    dest = (_decode(DEST_ATTRS, nested[CMD_ATTR_DEST], service.get("af"))
            if CMD_ATTR_DEST in nested else None)
    return COMMAND_NAMES.get(command, ("?", str(command))), service, dest


class IPVSNetlink:
    """One generic netlink socket to IPVS, opened in the calling thread's namespace."""

    def __init__(self):
        self._sock = NetlinkSocket(NETLINK_GENERIC)
        self.family = self._family_id("IPVS")

    def close(self) -> None:
        self._sock.close()

    def _family_id(self, name: str) -> int:
        payload = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + _attr(
            CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
        for _, body in self._sock.dump(GENL_ID_CTRL, payload, flags=NLM_F_REQUEST,
                                       what=f"generic netlink family {name}"):
            return struct.unpack("=H", dict(_attrs(body[4:]))[CTRL_ATTR_FAMILY_ID][:2])[0]
        raise OSError(errno.ENOENT, f"generic netlink family {name} not found")

    def dump(self, kind: str, service: dict | None = None) -> list[dict]:
        """Every service (kind "service") or every destination of ``service`` ("dest")."""
        payload = (request(kind, "dump", service) if service
                   else struct.pack("=BBH", COMMANDS[(kind, "dump")], IPVS_GENL_VERSION, 0))
        parsed = [parse(body) for _, body in self._sock.dump(self.family, payload,
                                                              what=f"IPVS {kind} dump")]
        return [s if kind == "service" else d for _, s, d in parsed]

    def write(self, requests: list[bytes]) -> list[int]:
        """Send the requests in order, in batches; each one's errno (0: done)."""
        return self._sock.write([(self.family, 0, r) for r in requests])
