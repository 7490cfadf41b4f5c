"""bridge's ``ipMasq``: masquerade what a pod sends outside its own subnet.

The reference's chain and rules (ip.SetupIPMasq), so a node can switch plugins:
POSTROUTING -s <pod ip> -> CNI-<hash>: ACCEPT to the pod's subnet, MASQUERADE
the rest except multicast. One iptables-restore per family.
"""
from __future__ import annotations

import ipaddress

from cni import iptables
from cni.names import ipmasq_chain


def build_restore(chain: str, comment: str, addresses: list[str], present: set[str]) -> str:
    """nat restore text for one family; ``present``: POSTROUTING rules already there."""
    lines = ["*nat", f":{chain} - [0:0]"]
    tail = ["-m", "comment", "--comment", comment]
    multicast = "224.0.0.0/4" if ":" not in addresses[0] else "ff00::/8"
    for addr in addresses:
        net = ipaddress.ip_interface(addr).network
        lines.append(f"-A {chain} " + iptables.format_args(["-d", str(net), *tail, "-j", "ACCEPT"]))
    lines.append(f"-A {chain} " + iptables.format_args(["!", "-d", multicast, *tail, "-j", "MASQUERADE"]))
    for addr in addresses:
        ip = ipaddress.ip_interface(addr).ip
        rule = iptables.format_args(["-s", f"{ip}/{ip.max_prefixlen}", *tail, "-j", chain])
        if rule not in present:
            lines.append("-A POSTROUTING " + rule)
    return "\n".join(lines + ["COMMIT", ""])


def ensure(name: str, container_id: str, addresses: list[str], run=None) -> None:
    chain, comment = ipmasq_chain(name, container_id)
    by_family: dict[int, list[str]] = {}
    for addr in addresses:
        by_family.setdefault(ipaddress.ip_interface(addr).version, []).append(addr)
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
