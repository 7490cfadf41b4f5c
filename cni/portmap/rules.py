"""portmap's rules as plain data: what one container wants in a nat table, and the
restore text that gets it there from what ``iptables-save`` shows — no I/O here.
"""
from __future__ import annotations

from cni import names
from cni.portmap.config import Conf, PortMapping
from cni.record import Record
from lowlevel import ipnet
from lowlevel import xtables as ipt

# The kernel's multiport match holds at most 15 ports (XT_MULTI_PORTS).
MULTIPORT_MAX = 15
TABLE = "nat"


# Everything one container wants in one family's nat table:
#   chain          its own chain
#   jumps          rules in CNI-HOSTPORT-DNAT that enter ``chain``
#   rules          the rules of ``chain``, as iptables-save prints them
#   setmark_chain  where hairpin/localhost traffic is marked; "" when snat is off
#   own_masq       we keep CNI-HOSTPORT-SETMARK/MASQ (no external mark chain)
#   mark, udp_ports
class Plan(Record):
    __slots__ = ("family", "chain", "jumps", "rules", "setmark_chain", "own_masq", "mark",
                 "udp_ports")


def _applicable(conf: Conf, family: int) -> list[PortMapping]:
    return [m for m in conf.mappings
            if not m.host_ip or ipnet.ip_address(m.host_ip).version == family]


def _comment(conf: Conf, container_id: str, ifname: str) -> str:
    text = f'dnat name: "{conf.name}" id: "{container_id}" if: "{ifname}"'
    return "".join(c for c in text if c.isprintable() and c != "\\")[:255]


def build_jumps(conf: Conf, family: int, maps: list[PortMapping], chain: str,
                comment: str) -> tuple[str, ...]:
    by_proto: dict[str, list[str]] = {}
    for m in maps:
        ports = by_proto.setdefault(m.protocol, [])
        if str(m.host_port) not in ports:
            ports.append(str(m.host_port))
    out = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for i in range(0, len(ports), MULTIPORT_MAX):
            out.append(ipt.format_args(
                ["-p", proto, "-m", "comment", "--comment", comment, "-m", "multiport",
                 "--dports", ",".join(ports[i:i + MULTIPORT_MAX]),
                 *conf.conditions[family == 6], "-j", chain]))
    return tuple(out)


def build_chain_rules(conf: Conf, net, maps: list[PortMapping], setmark: str) -> tuple[str, ...]:
    """Per mapping: mark hairpin and localhost (or everything) for masquerade, then DNAT."""
    host_bits = "/32" if net.version == 4 else "/128"
    target = (f"{net.ip}:" if net.version == 4 else f"[{net.ip}]:")
    rules = []
    for m in maps:
        dst = ""
        if m.host_ip and not ipnet.ip_address(m.host_ip).is_unspecified:
            dst = f"-d {m.host_ip}{host_bits} "
        match = f"{dst}-p {m.protocol} -m {m.protocol} --dport {m.host_port}"
        if setmark and conf.masq_all:
            rules.append(f"{match} -j {setmark}")
        elif setmark:
            # The whole pod subnet, as the reference does: besides hairpin, a
            # neighbour pod on the same bridge would get the reply straight over
            # the bridge, un-NATed, unless the node masquerades it.
            rules.append(f"-s {net.network} {match} -j {setmark}")
            if net.version == 4:
                rules.append(f"-s 127.0.0.0/8 {match} -j {setmark}")
        rules.append(f"{match} -j DNAT --to-destination {target}{m.container_port}")
    return tuple(rules)


def build_plan(conf: Conf, container_id: str, ifname: str, net) -> Plan | None:
    """What this container wants in ``net``'s family; None when no mapping applies."""
    maps = _applicable(conf, net.version)
    if not maps:
        return None
    chain = names.portmap_dnat_chain(container_id, ifname)
    setmark = ""
    if conf.snat:
        setmark = conf.external_setmark_chain or names.HOSTPORT_SETMARK_CHAIN
    return Plan(
        family=net.version, chain=chain,
        jumps=build_jumps(conf, net.version, maps, chain, _comment(conf, container_id, ifname)),
        rules=build_chain_rules(conf, net, maps, setmark),
        setmark_chain=setmark, own_masq=conf.snat and not conf.external_setmark_chain,
        mark=names.mark_mask(conf.mark_bit),
        udp_ports=tuple(sorted({m.host_port for m in maps if m.protocol == "udp"})))


# One shared piece a plan needs: ``rule`` in ``chain`` (inserted first when
# ``first``), after creating ``creates`` if that is missing. An entry jump counts
# as present when any rule of its chain jumps to the same target, however it is
# spelled (the reference plugin writes the same ones); other rules only in their
# exact iptables-save text.
class SharedRule(Record):
    __slots__ = ("creates", "chain", "rule", "first", "is_jump")


def build_shared_rules(plan: Plan) -> list[SharedRule]:
    dnat, setmark, masq = (names.HOSTPORT_DNAT_CHAIN, names.HOSTPORT_SETMARK_CHAIN,
                           names.HOSTPORT_MASQ_CHAIN)
    out = []
    if plan.own_masq:
        out += [
            SharedRule(setmark, setmark, f'-m comment --comment '
                       f'"{names.HOSTPORT_SETMARK_COMMENT}" -j MARK --set-xmark {plan.mark}',
                       False, False),
            SharedRule(masq, masq, f"-m mark --mark {plan.mark} -j MASQUERADE", False, False),
            # First in POSTROUTING: the bridge plugin's own masquerade rules would
            # otherwise see the packet before the mark is honoured.
            SharedRule("", "POSTROUTING", f'-m comment --comment '
                       f'"{names.HOSTPORT_MASQ_COMMENT}" -j {masq}', True, True)]
    out += [SharedRule(dnat if entry == "PREROUTING" else "", entry,
                       f"-m addrtype --dst-type LOCAL -j {dnat}", False, True)
            for entry in ("PREROUTING", "OUTPUT")]
    return out


def _present(saved: ipt.SavedTable, shared: SharedRule) -> bool:
    if shared.is_jump:
        target = ipt.rule_target(shared.rule)
        return any(ipt.rule_target(r) == target for r in saved.rules(shared.chain))
    return shared.rule in saved.rules(shared.chain)


def _line(shared: SharedRule) -> str:
    return (f"-I {shared.chain} 1 {shared.rule}" if shared.first
            else f"-A {shared.chain} {shared.rule}")


def build_add_restore(plan: Plan, saved: ipt.SavedTable) -> str:
    """One transaction: our chain (re)written whole, shared chains and jumps only if missing."""
    lines = ["*" + TABLE, f":{plan.chain} - [0:0]"]
    for shared in build_shared_rules(plan):
        if shared.creates and not saved.has_chain(shared.creates):
            lines.append(f"-N {shared.creates}")
        if not _present(saved, shared):
            lines.append(_line(shared))
    lines += [f"-D {chain} {rule}" for chain, rule in saved.jumps_to(plan.chain)]
    lines += [f"-A {names.HOSTPORT_DNAT_CHAIN} {jump}" for jump in plan.jumps]
    lines += [f"-A {plan.chain} {rule}" for rule in plan.rules]
    return "\n".join(lines + ["COMMIT", ""])


def build_del_restore(chain: str, saved: ipt.SavedTable) -> str:
    """Remove every jump to ``chain`` and the chain itself; "" when nothing is there.

    The last container's DEL also removes the shared chains and their jumps, so a
    node without hostPorts carries no hostPort rules.
    """
    jumps = saved.jumps_to(chain)
    lines = [f"-D {src} {rule}" for src, rule in jumps]
    if saved.has_chain(chain):
        lines += [f"-F {chain}", f"-X {chain}"]
    if not lines:
        return ""
    lines += build_shared_cleanup(saved, chain, jumps)
    return "\n".join(["*" + TABLE, *lines, "COMMIT", ""])


def build_shared_cleanup(saved: ipt.SavedTable, chain: str,
                         removed: list[tuple[str, str]]) -> list[str]:
    """Restore lines removing the shared chains once nothing but their entry jumps uses them."""
    dnat, setmark, masq = (names.HOSTPORT_DNAT_CHAIN, names.HOSTPORT_SETMARK_CHAIN,
                           names.HOSTPORT_MASQ_CHAIN)
    if not saved.has_chain(dnat) or any(
            (dnat, rule) not in removed for rule in saved.rules(dnat)):
        return []
    lines = [f"-D {src} {rule}" for src, rule in saved.jumps_to(dnat)] + [f"-X {dnat}"]
    # Another chain (a stale one, or one a person added) may still mark for
    # masquerade: then the mark and masquerade chains stay.
    if any(src not in (chain, dnat) for src, _ in saved.jumps_to(setmark)):
        return lines
    if saved.has_chain(setmark):
        lines += [f"-F {setmark}", f"-X {setmark}"]
    if saved.has_chain(masq) and all(src == "POSTROUTING" for src, _ in saved.jumps_to(masq)):
        lines += [f"-D {src} {rule}" for src, rule in saved.jumps_to(masq)]
        lines += [f"-F {masq}", f"-X {masq}"]
    return lines


def check_plan(plan: Plan, saved: ipt.SavedTable) -> list[str]:
    """What is missing or different in the kernel; empty when all is in place."""
    problems = []
    for shared in build_shared_rules(plan):
        if shared.creates and not saved.has_chain(shared.creates):
            problems.append(f"chain {shared.creates} is missing")
        if not _present(saved, shared):
            problems.append(f"rule missing: {_line(shared)}")
    if not saved.has_chain(plan.chain):
        return problems + [f"chain {plan.chain} is missing"]
    if tuple(saved.rules(plan.chain)) != plan.rules:
        problems.append(f"chain {plan.chain} has {saved.rules(plan.chain)}, "
                        f"want {list(plan.rules)}")
    # Extra match arguments (conditionsV4/V6) come back from iptables-save in its own
    # order and spelling, so jumps are compared by protocol and port list only.
    have = sorted(_jump_key(r) for c, r in saved.jumps_to(plan.chain)
                  if c == names.HOSTPORT_DNAT_CHAIN)
    want = sorted(_jump_key(r) for r in plan.jumps)
    if have != want:
        problems.append(f"jumps to {plan.chain}: have {have}, want {want}")
    return problems


def _jump_key(rule: str) -> tuple[str, str]:
    args = ipt.split_rule(rule)
    get = (lambda flag: args[args.index(flag) + 1] if flag in args else "")
    return get("-p"), get("--dports")


def _network_of(rule: str) -> str | None:
    """The network name in the comment of one of our jumps, None if it has none."""
    args = ipt.split_rule(rule)
    comment = args[args.index("--comment") + 1] if "--comment" in args[:-1] else ""
    prefix = 'dnat name: "'
    return comment[len(prefix):].split('"', 1)[0] if comment.startswith(prefix) else None


def build_stale_chains(saved: ipt.SavedTable, network: str, valid: set[str]) -> list[str]:
    """Our chains that no valid attachment of ``network`` owns.

    A chain whose jumps name another network is that network's to collect; a
    chain nothing jumps to is dead and goes whichever network asks.
    """
    stale = []
    for chain in saved.chains:
        if not names.is_portmap_dnat_chain(chain) or chain in valid:
            continue
        owners = {_network_of(rule) for _, rule in saved.jumps_to(chain)}
        if not owners or owners == {network}:
            stale.append(chain)
    return stale
