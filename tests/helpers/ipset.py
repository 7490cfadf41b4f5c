"""A stateful fake of the `ipset` command: save, list -n, restore [-exist].

Tests hand it to the code under test as the command runner and look at the
sets it keeps, not at the calls it received.
"""
from __future__ import annotations

import ipaddress


class Result:
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Refused(Exception):
    pass


class FakeIpset:
    """The kernel's ipsets as `ipset` shows them: save / list -n / restore.

    restore applies line by line and stops at the first refused line, leaving
    the lines before it applied, with ipset's "Error in line N:" message.
    ``refs`` are sets an iptables rule points at: they cannot be destroyed, and a
    swap exchanges contents while the reference stays with the name.
    """

    def __init__(self):
        self.sets: dict[str, dict] = {}
        self.refs: set[str] = set()
        self.calls: list[list[str]] = []
        self.restores: list[str] = []

    def __call__(self, argv, input=None):
        self.calls.append(argv)
        assert argv[0] == "ipset"
        if argv[1:] == ["save"]:
            return Result(stdout=self.save())
        if argv[1:] == ["list", "-n"]:
            return Result(stdout="".join(f"{name}\n" for name in self.sets))
        if argv[1:] in (["restore"], ["restore", "-exist"]):
            self.restores.append(input)
            exist = argv[2:] == ["-exist"]
            for no, line in enumerate(input.splitlines(), 1):
                try:
                    self.apply(line.split(), exist)
                except Refused as exc:
                    return Result(1, stderr=f"ipset v7.17: Error in line {no}: {exc}\n")
            return Result()
        return Result(1, stderr=f"unexpected {argv}")

    def save(self) -> str:
        out = []
        for name, s in self.sets.items():
            out.append(f"create {name} {s['kind']} {s['header']}")
            out += [f"add {name} {entry}" for entry in s["entries"]]
        return "".join(line + "\n" for line in out)

    def add_set(self, name, kind, family, entries=(), header_extra=""):
        self.apply(["create", name, kind, "family", family])
        if header_extra:
            self.sets[name]["header"] += " " + header_extra
        for entry in entries:
            self.apply(["add", name, *entry.split()])

    def apply(self, words, exist=False):
        op, name, *rest = words
        if op == "create":
            if name in self.sets and exist and self.sets[name]["kind"] == rest[0]:
                return
            if name in self.sets:
                raise Refused("Set cannot be created: set with the same name already exists")
            opts = dict(zip(rest[1::2], rest[2::2]))
            family = opts.get("family", "inet")
            self.sets[name] = {
                "kind": rest[0], "family": family, "entries": [], "keys": set(),
                "maxelem": int(opts.get("maxelem", 65536)),
                "header": f"family {family} hashsize {opts.get('hashsize', 1024)} "
                          f"maxelem {opts.get('maxelem', 65536)} bucketsize 12 initval 0x1",
            }
        elif name not in self.sets:
            raise Refused("The set with the given name does not exist")
        elif op == "add":
            s = self.sets[name]
            entry = " ".join([self.kernel_form(s, rest[0]), *rest[1:]])
            if entry.split()[0] in s["keys"]:
                if exist:
                    return
                raise Refused("Element cannot be added to the set: it's already added")
            if len(s["entries"]) >= s["maxelem"]:
                raise Refused("Hash is full, cannot add more elements")
            s["entries"].append(entry)
            s["keys"].add(entry.split()[0])
        elif op == "del":
            s = self.sets[name]
            key = self.kernel_form(s, rest[0])
            if key not in s["keys"]:
                if exist:
                    return
                raise Refused("Element cannot be deleted from the set: it's not added")
            s["keys"].discard(key)
            s["entries"] = [e for e in s["entries"] if e.split()[0] != key]
        elif op == "destroy":
            if name in self.refs:
                raise Refused("Set cannot be destroyed: it is in use by a kernel component")
            del self.sets[name]
        elif op == "swap":
            other = rest[0]
            if other not in self.sets:
                raise Refused("The set with the given name does not exist")
            a, b = self.sets[name], self.sets[other]
            if (a["kind"], a["family"]) != (b["kind"], b["family"]):
                raise Refused("The sets cannot be swapped: their type does not match")
            self.sets[name], self.sets[other] = b, a
        else:
            raise Refused(f"unknown command {op}")

    @staticmethod
    def kernel_form(s, text):
        """What the kernel stores for an entry (measured with ipset 7.17)."""
        if s["kind"] == "hash:net":
            net = ipaddress.ip_network(text, strict=False)
            if net.prefixlen == 0:
                raise Refused("The value of the CIDR parameter of the IP address is invalid")
            return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if s["kind"] == "hash:ip":
            return str(ipaddress.ip_address(text))
        return text

    def entries(self, name):
        return sorted(e.split()[0] for e in self.sets[name]["entries"])
