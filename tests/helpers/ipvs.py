"""A small stateful model of the kernel's IPVS table, for the IPVS applier's tests.

It takes the applier's real generic netlink requests (proxyd/kernel/ipvs_netlink.py),
decodes what they put on the wire and answers each as the kernel does -- with
the kernel's answers measured on Linux 6.1 (tests/kernel/test_ipvs_applier_kernel.py).
"""
from __future__ import annotations

import errno
import ipaddress
import itertools

from proxyd.kernel.ipvs import F_HASHED
from proxyd.kernel.ipvs_netlink import parse

SCHEDULERS = {"rr", "wrr", "lc", "wlc", "sh", "dh", "mh"}
FULL_SERVICE = {"sched_name", "flags", "timeout", "netmask"}
FULL_DEST = {"fwd_method", "weight", "u_threshold", "l_threshold"}


class Refused(Exception):
    def __init__(self, code):
        self.code = code


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

    def dump(self, kind, service=None):
        self.calls.append((kind, "dump"))
        if kind == "service":
            return [self._service_attrs(k, s) for k, s in self.services.items()]
        key = self._key(service)
        if key not in self.services:
            raise OSError(errno.ESRCH, "no such service")
        return [dict(addr=d[0], port=d[1], fwd_method=v["fwd_method"], weight=v["weight"],
                     active_conns=v["active"], inact_conns=v["inactive"])
                for d, v in self.services[key]["dests"].items()]

    def write(self, requests):
        codes = []
        for payload in requests:
            (kind, command), service, dest = parse(payload)
            self.calls.append((kind, command))
            try:
                (self._service if kind == "service" else self._dest)(command, service, dest)
                codes.append(0)
            except Refused as e:
                codes.append(e.code)
        return codes

    def _service(self, command, attrs, _dest):
        key = self._key(attrs)
        if command == "del":
            if key not in self.services:
                raise Refused(errno.ESRCH)
            del self.services[key]
            return
        assert command in ("add", "set"), command
        if not FULL_SERVICE <= attrs.keys():
            raise Refused(errno.EINVAL)       # add and set need the full entry
        if attrs["sched_name"] not in SCHEDULERS:
            raise Refused(errno.ENOENT)
        exists = key in self.services
        if command == "add" and exists:
            raise Refused(errno.EEXIST)
        if command == "set" and not exists:
            raise Refused(errno.ESRCH)
        entry = self.services[key] if exists else dict(generation=next(self._generation),
                                                       dests={})
        flags, mask = attrs["flags"]
        old = entry.get("flags", 0)
        entry.update(sched_name=attrs["sched_name"], timeout=attrs["timeout"],
                     flags=(old & ~mask) | (flags & mask) | F_HASHED)
        self.services[key] = entry

    def _dest(self, command, service, attrs):
        key = self._key(service)
        if key not in self.services:
            raise Refused(errno.ESRCH)
        dests = self.services[key]["dests"]
        dk = (str(ipaddress.ip_address(attrs["addr"])), attrs["port"])
        if command in ("add", "set") and not FULL_DEST <= attrs.keys():
            raise Refused(errno.EINVAL)
        if command == "del":
            if dk not in dests:
                raise Refused(errno.ENOENT)
            del dests[dk]
        elif command == "add":
            if dk in dests:
                raise Refused(errno.EEXIST)
            ip = ipaddress.ip_address(dk[0])
            if ip.version == 4 and (ip.is_multicast or ip.packed[-1] == 255):
                raise Refused(errno.EINVAL)     # only a unicast or local IPv4 real server
            dests[dk] = dict(fwd_method=attrs["fwd_method"], weight=attrs["weight"],
                             active=0, inactive=0)
        elif command == "set":
            if dk not in dests:
                raise Refused(errno.ENOENT)
            dests[dk].update(fwd_method=attrs["fwd_method"], weight=attrs["weight"])
        else:
            raise AssertionError(f"unexpected dest command {command}")

    @staticmethod
    def _service_attrs(key, s):
        if key[0] == "fwmark":
            attrs = dict(af=2, fwmark=key[1])
        else:
            protocol, addr, port = key
            attrs = dict(af=10 if ":" in addr else 2, protocol=protocol, addr=addr, port=port)
        attrs.update(sched_name=s["sched_name"], flags=(s["flags"], 0xFFFFFFFF),
                     timeout=s["timeout"], netmask=0xFFFFFFFF)
        return attrs
