"""A small stateful model of the kernel's IPVS table, for the IPVS applier's tests.

It takes the applier's real pyroute2 ``IPVSService``/``IPVSDest`` requests, reads
what they would put on the wire, and answers dumps with real generic-netlink
messages -- with the kernel's answers measured on Linux 6.1
(tests/kernel/test_ipvs_applier_kernel.py).
"""
from __future__ import annotations

import errno
import ipaddress
import itertools

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as genl

from proxyd.kernel.ipvs import F_HASHED

SCHEDULERS = {"rr", "wrr", "lc", "wlc", "sh", "dh", "mh"}


def refuse(code):
    return NetlinkError(code, errno.errorcode[code])


def wire(spec) -> dict:
    """What a pyroute2 request object puts on the wire: {short attribute name: value}."""
    prefix = spec.msg.prefix
    return {name[len(prefix):].lower(): value for name, value in spec.dump_nla()["attrs"]}


def message(kind: str, attrs: dict):
    """A dump answer as pyroute2 parses it off the socket."""
    nla = {"service": "IPVS_SVC_ATTR_", "dest": "IPVS_DEST_ATTR_"}[kind]
    msg = genl.ipvsmsg()
    msg["cmd"], msg["version"] = genl.IPVS_CMD_NEW_SERVICE, 1
    msg["attrs"] = [(f"IPVS_CMD_ATTR_{kind.upper()}",
                     {"attrs": [(nla + k.upper(), v) for k, v in attrs.items()]})]
    msg.encode()
    parsed = genl.ipvsmsg(msg.data)
    parsed.decode()
    return parsed


class FakeIPVS:
    """One namespace's IPVS table."""

    def __init__(self):
        self.services: dict[tuple, dict] = {}
        self._generation = itertools.count(1)
        self.calls: list[tuple[str, str]] = []      # (service|dest, command), in order

    # -- set-up and inspection helpers ---------------------------------------
    def add(self, protocol, addr, port, sched="rr", dests=(), fwmark=0, **kw):
        key = ("fwmark", fwmark) if fwmark else (protocol, addr, port)
        self.services[key] = dict(sched_name=sched, flags=F_HASHED | kw.get("flags", 0),
                                  timeout=kw.get("timeout", 0), generation=next(self._generation),
                                  dests={})
        for daddr, dport, weight in dests:
            self.services[key]["dests"][(daddr, dport)] = dict(
                fwd_method=0, weight=weight, active=0, inactive=0)
        return self.services[key]

    def table(self):
        """The table as ``ipvsadm -Ln`` would show it, generations aside."""
        return {key: (s["sched_name"], s["flags"], s["timeout"],
                      {d: (v["fwd_method"], v["weight"]) for d, v in s["dests"].items()})
                for key, s in self.services.items()}

    def svc(self, protocol, addr, port):
        return self.services[(protocol, addr, port)]

    # -- the IPVS calls -------------------------------------------------------
    def close(self):
        pass

    def _key(self, attrs):
        assert "af" in attrs, "IPVS needs the address family"
        return (attrs["protocol"], str(ipaddress.ip_address(attrs["addr"])), attrs["port"])

    def service(self, command, service=None):
        self.calls.append(("service", command))
        if command == "dump":
            return [self._service_msg(k, s) for k, s in self.services.items()]
        attrs = wire(service)
        key = self._key(attrs)
        if command in ("del", "update"):     # pyroute2 0.9.7 sends 'update' as a DELETE
            if key not in self.services:
                raise refuse(errno.ESRCH)
            del self.services[key]
            return []
        if command not in ("add", "set"):
            raise AssertionError(f"unexpected service command {command}")
        if ":" in key[1] and "netmask" not in attrs:
            raise refuse(errno.EINVAL)        # an IPv6 service needs its prefix length
        if attrs["sched_name"] not in SCHEDULERS:
            raise refuse(errno.ENOENT)
        exists = key in self.services
        if command == "add" and exists:
            raise refuse(errno.EEXIST)
        if command == "set" and not exists:
            raise refuse(errno.ESRCH)
        entry = self.services[key] if exists else dict(generation=next(self._generation),
                                                       dests={})
        mask = attrs["flags"]["mask"]
        old = entry.get("flags", 0)
        entry.update(sched_name=attrs["sched_name"], timeout=attrs["timeout"],
                     flags=(old & ~mask) | (attrs["flags"]["flags"] & mask) | F_HASHED)
        self.services[key] = entry
        return []

    def dest(self, command, service, dest=None):
        self.calls.append(("dest", command))
        key = self._key(wire(service))
        if key not in self.services:
            raise refuse(errno.ESRCH)
        dests = self.services[key]["dests"]
        if command == "dump":
            return [self._dest_msg(d, v) for d, v in dests.items()]
        attrs = wire(dest)
        dk = (str(ipaddress.ip_address(attrs["addr"])), attrs["port"])
        if command in ("del", "update"):
            if dk not in dests:
                raise refuse(errno.ENOENT)
            del dests[dk]
        elif command == "add":
            if dk in dests:
                raise refuse(errno.EEXIST)
            ip = ipaddress.ip_address(dk[0])
            if ip.version == 4 and (ip.is_multicast or ip.packed[-1] == 255):
                raise refuse(errno.EINVAL)     # only a unicast or local IPv4 real server
            dests[dk] = dict(fwd_method=attrs["fwd_method"], weight=attrs["weight"],
                             active=0, inactive=0)
        elif command == "set":
            if dk not in dests:
                raise refuse(errno.ENOENT)
            dests[dk].update(fwd_method=attrs["fwd_method"], weight=attrs["weight"])
        else:
            raise AssertionError(f"unexpected dest command {command}")
        return []

    def _service_msg(self, key, s):
        if key[0] == "fwmark":
            attrs = dict(af=2, fwmark=key[1])
        else:
            protocol, addr, port = key
            attrs = dict(af=10 if ":" in addr else 2, protocol=protocol, addr=addr, port=port)
        attrs.update(sched_name=s["sched_name"], flags={"flags": s["flags"], "mask": 0xFFFFFFFF},
                     timeout=s["timeout"], netmask="255.255.255.255")
        return message("service", attrs)

    def _dest_msg(self, dk, v):
        addr, port = dk
        return message("dest", dict(addr=addr, port=port, fwd_method=v["fwd_method"],
                                    weight=v["weight"], active_conns=v["active"],
                                    inact_conns=v["inactive"],
                                    addr_family=10 if ":" in addr else 2))
