"""IPVS's generic netlink messages as we encode and decode them, checked against pyroute2's
independent reading of the same ABI (include/uapi/linux/ip_vs.h)."""
from __future__ import annotations

import socket
import struct

import pytest
from pyroute2.netlink.generic import ipvs as genl

from proxyd.kernel.ipvs_netlink import parse, request
from proxyd.kernel.ipvs_table import KernelService, dest_attrs, service_attrs
from proxyd.kernel.state import Destination


def as_pyroute2(payload: bytes):
    msg = genl.ipvsmsg(struct.pack("=IHHII", 16 + len(payload), 30, 1, 1, 0) + payload)
    msg.decode()
    return msg


@pytest.mark.parametrize("vip,backend,netmask", [("10.96.0.10", "10.200.0.2", "255.255.255.255"),
                                                 ("fd00:96::10", "fd00:200::2", "128.0.0.0")])
def test_a_destination_add_reads_back_in_pyroute2_as_ipvsadm_sends_it(vip, backend, netmask):
    payload = request("dest", "add", service_attrs(("UDP", vip, 53), KernelService("sh", 1, 60)),
                      dest_attrs((backend, 5353), Destination(backend, 5353, weight=3,
                                                              forward="tunnel")))
    msg = as_pyroute2(payload)
    svc, dest = (dict(msg.get_attr(a)["attrs"]) for a in ("IPVS_CMD_ATTR_SERVICE",
                                                            "IPVS_CMD_ATTR_DEST"))
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    assert msg["cmd"] == genl.IPVS_CMD_NEW_DEST
    assert svc == {"IPVS_SVC_ATTR_AF": family, "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_UDP,
                   "IPVS_SVC_ATTR_ADDR": vip, "IPVS_SVC_ATTR_PORT": 53,
                   "IPVS_SVC_ATTR_SCHED_NAME": "sh",
                   "IPVS_SVC_ATTR_FLAGS": {"flags": 1, "mask": 0xFFFF},
                   "IPVS_SVC_ATTR_TIMEOUT": 60,
                   # pyroute2 prints the u32 as an address: 128 host-order is 128.0.0.0
                   "IPVS_SVC_ATTR_NETMASK": netmask}
    assert dest == {"IPVS_DEST_ATTR_ADDR": backend, "IPVS_DEST_ATTR_PORT": 5353,
                    "IPVS_DEST_ATTR_FWD_METHOD": 2, "IPVS_DEST_ATTR_WEIGHT": 3,
                    "IPVS_DEST_ATTR_U_THRESH": 0, "IPVS_DEST_ATTR_L_THRESH": 0,
                    "IPVS_DEST_ATTR_ADDR_FAMILY": family}


def test_a_delete_carries_only_the_keys():
    msg = as_pyroute2(request("dest", "del", service_attrs(("TCP", "10.96.0.10", 80)),
                              dest_attrs(("10.200.0.2", 8080))))
    assert msg["cmd"] == genl.IPVS_CMD_DEL_DEST
    assert [n for n, _ in msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"]] == [
        "IPVS_SVC_ATTR_AF", "IPVS_SVC_ATTR_PROTOCOL", "IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_PORT"]
    assert [n for n, _ in msg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"]] == [
        "IPVS_DEST_ATTR_ADDR", "IPVS_DEST_ATTR_PORT", "IPVS_DEST_ATTR_ADDR_FAMILY"]


def test_dump_answers_pyroute2_encodes_are_read_back():
    msg = genl.ipvsmsg()
    msg["cmd"], msg["version"] = genl.IPVS_CMD_NEW_SERVICE, 1
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", {"attrs": [
        ("IPVS_SVC_ATTR_AF", 10), ("IPVS_SVC_ATTR_PROTOCOL", 6),
        ("IPVS_SVC_ATTR_ADDR", "fd00:96::10"), ("IPVS_SVC_ATTR_PORT", 443),
        ("IPVS_SVC_ATTR_SCHED_NAME", "wlc"), ("IPVS_SVC_ATTR_FLAGS", {"flags": 3, "mask": 7}),
        ("IPVS_SVC_ATTR_TIMEOUT", 300)]})]
    msg.encode()
    (kind, command), svc, dest = parse(bytes(msg.data[16:]))
    assert (kind, command, dest) == ("service", "add", None)
    assert svc == {"af": 10, "protocol": 6, "addr": "fd00:96::10", "port": 443,
                   "sched_name": "wlc", "flags": (3, 7), "timeout": 300}
