"""Checks our runtime_v1.proto against the CRI descriptor compiled into containerd.

Go protobuf registers each .proto as a gzipped FileDescriptorProto inside the
binary, so the installed daemon itself says which field numbers and types it
speaks; no upstream source is needed to check wire compatibility.
"""
from __future__ import annotations

import zlib

from google.protobuf import descriptor_pb2

# gzip member header as Go's compress/gzip writes it (no name, no mtime, OS=unknown).
_GZIP_MAGIC = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def embedded_descriptor(binary: str, package: str = "runtime.v1"):
    """The FileDescriptorProto of ``package`` found in ``binary``, or None."""
    with open(binary, "rb") as f:
        data = f.read()
    at = data.find(_GZIP_MAGIC)
    while at >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[at:at + (1 << 20)])
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # not a descriptor: any other gzip blob or a false match
            fd = None
        if fd is not None and fd.package == package and fd.message_type:
            return fd
        at = data.find(_GZIP_MAGIC, at + 1)
    return None


def _fields(msg) -> dict:
    return {f.name: (f.number, f.type, f.label, f.type_name) for f in msg.field}


def wire_mismatches(ours, theirs) -> list[str]:
    """Every declaration in ``ours`` that differs on the wire from ``theirs``."""
    problems = []
    their_msgs = {m.name: m for m in theirs.message_type}
    for msg in ours.message_type:
        if msg.name not in their_msgs:
            problems.append(f"message {msg.name}: not in containerd's API")
            continue
        want = _fields(their_msgs[msg.name])
        for name, spec in _fields(msg).items():
            if want.get(name) != spec:
                problems.append(f"{msg.name}.{name}: ours {spec}, containerd {want.get(name)}")
    their_enums = {e.name: {v.name: v.number for v in e.value} for e in theirs.enum_type}
    for enum in ours.enum_type:
        values = {v.name: v.number for v in enum.value}
        if any(their_enums.get(enum.name, {}).get(k) != n for k, n in values.items()):
            problems.append(f"enum {enum.name}: ours {values}, containerd "
                            f"{their_enums.get(enum.name)}")
    their_rpcs = {(s.name, m.name): (m.input_type, m.output_type)
                  for s in theirs.service for m in s.method}
    for svc in ours.service:
        for m in svc.method:
            if their_rpcs.get((svc.name, m.name)) != (m.input_type, m.output_type):
                problems.append(f"rpc {svc.name}.{m.name}: signature differs")
    return problems
