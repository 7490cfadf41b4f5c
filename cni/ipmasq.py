"""bridge's ``ipMasq``: masquerade what a pod sends outside its own subnet.

The reference's chain and rules (ip.SetupIPMasq), so a node can switch plugins:
POSTROUTING -s <pod ip> -> CNI-<hash>: ACCEPT to the pod's subnet, MASQUERADE
the rest except multicast. One iptables-restore per family.
"""
from __future__ import annotations

import sys

from cni import names, skel
from cni.names import ipmasq_chain
from lowlevel import ipnet
from lowlevel import xtables as iptables


class cni_errors:
    """``with cni_errors("ipMasq"):`` turns iptables failures into CniErrors."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, iptables.IptablesError):
            raise skel.CniError(skel.INTERNAL, f"{self.what}: {str(exc).splitlines()[0]}",
                                str(exc)) from None
        if isinstance(exc, OSError):   # the lock file under /run
            raise skel.CniError(skel.IO_FAILURE, f"{self.what}: {exc}") from None
        return False


def build_restore(chain: str, comment: str, addresses: list[str], present: set[str]) -> str:
    """nat restore text for one family; ``present``: POSTROUTING rules already there."""
    lines = ["*nat", f":{chain} - [0:0]"]
    tail = ["-m", "comment", "--comment", comment]
    multicast = "224.0.0.0/4" if ":" not in addresses[0] else "ff00::/8"
    for addr in addresses:
        net = ipnet.ip_interface(addr).network
        lines.append(f"-A {chain} " + iptables.format_args(["-d", str(net), *tail, "-j", "ACCEPT"]))
    lines.append(f"-A {chain} " + iptables.format_args(["!", "-d", multicast, *tail, "-j", "MASQUERADE"]))
    for addr in addresses:
        ip = ipnet.ip_interface(addr).ip
        rule = iptables.format_args(["-s", f"{ip}/{ip.max_prefixlen}", *tail, "-j", chain])
        if rule not in present:
            lines.append("-A POSTROUTING " + rule)
    return "\n".join(lines + ["COMMIT", ""])


def ensure(name: str, container_id: str, addresses: list[str], run=None) -> None:
    chain, comment = ipmasq_chain(name, container_id)
    by_family: dict[int, list[str]] = {}
    for addr in addresses:
        by_family.setdefault(ipnet.ip_interface(addr).version, []).append(addr)
    with iptables.FileLock():
        for family, addrs in sorted(by_family.items()):
            ipt = iptables.Iptables(family, run or iptables.run_command)
            present = set(ipt.save("nat").rules("POSTROUTING"))
            ipt.restore(build_restore(chain, comment, addrs, present))


def cleanup(name: str, container_id: str, run=None) -> None:
    """Remove the container's chain and the POSTROUTING jumps to it, in both families."""
    chain, _ = ipmasq_chain(name, container_id)
    with iptables.FileLock():
        for family in (4, 6):
            ipt = iptables.Iptables(family, run or iptables.run_command)
            try:
                nat = ipt.save("nat")
            except iptables.IptablesError:
                continue                    # no ip6tables (or no nat table): nothing of ours
            lines = [f"-D {src} {rule}" for src, rule in nat.jumps_to(chain)]
            if nat.has_chain(chain):
                lines += [f"-F {chain}", f"-X {chain}"]
            if lines:
                ipt.restore("\n".join(["*nat", *lines, "COMMIT", ""]))


def owner(chain: str, rules: list[str], network: str) -> str | None:
    """The container whose ipMasq chain on ``network`` ``chain`` is: a rule has ipMasq's
    comment for this network AND the chain's name is the hash of network and ID."""
    head = f'name: "{network}" id: "'
    for rule in rules:
        args = iptables.split_rule(rule) if '"' in rule else rule.split()
        for i in range(len(args) - 1):
            text = args[i + 1] if args[i] == "--comment" else ""
            cid = text[len(head):-1] if text.startswith(head) and text.endswith('"') else ""
            if cid and ipmasq_chain(network, cid)[0] == chain:
                return cid
    return None


def build_stale_restore(saved, network: str, valid_ids: set[str]) -> str:
    """nat restore text deleting the ipMasq chains (and jumps to them) of gone containers."""
    lines = []
    for chain in sorted(c for c in saved.chains if c.startswith(names.IPMASQ_CHAIN_PREFIX)):
        owner_id = owner(chain, saved.rules(chain), network)
        if owner_id is not None and owner_id not in valid_ids:
            lines += [f"-D {src} {rule}" for src, rule in saved.jumps_to(chain)]
            lines += [f"-F {chain}", f"-X {chain}"]
    return "\n".join(["*nat", *lines, "COMMIT", ""]) if lines else ""


def cleanup_stale(network: str, valid_ids: set[str], required: bool, run=None) -> None:
    for family in (4, 6):
        tables = iptables.Iptables(family, run or iptables.run_command)
        try:
            iptables.transact(tables, "nat",
                              lambda saved: build_stale_restore(saved, network, valid_ids),
                              iptables.FileLock(), lambda msg: print(msg, file=sys.stderr))
        except iptables.IptablesError as exc:
            # A failed save: no ip6tables nat table is common, and without ipMasq
            # configured a node without iptables holds no chain of ours either.
            if isinstance(exc, iptables.RestoreError) or family == 4 and required:
                raise
