"""kube-router-portmap: hostPort mapping for a container, chained after an interface plugin.

Semantics follow the reference plugin (containernetworking/plugins meta/portmap):
traffic to a local address on a hostPort is DNATed to the container, hairpin and
127.0.0.0/8 sources are marked for masquerade. The rules are built as plain data
and applied in one ``iptables-restore --noflush`` transaction per address family,
after one ``iptables-save -t nat`` that tells which shared chains and jumps exist.
"""
from __future__ import annotations

import sys

from cni import names, skel
from cni import portmap_rules as rules
from cni.record import Record
from cni.skel import CniError
from lowlevel import ipnet, localnet
from lowlevel import xtables as ipt

PROTOCOLS = ("tcp", "udp", "sctp")


class PortMapping(Record):
    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    _defaults = {"protocol": "tcp", "host_ip": ""}


class Conf(Record):
    """``conditions``: (conditionsV4, conditionsV6), each a tuple of iptables arguments."""
    __slots__ = ("name", "mappings", "snat", "masq_all", "mark_bit", "external_setmark_chain",
                 "conditions")
    _defaults = {"name": "", "mappings": (), "snat": True, "masq_all": False,
                 "mark_bit": names.DEFAULT_MASQ_MARK_BIT, "external_setmark_chain": "",
                 "conditions": ((), ())}


def _invalid(key: str, value) -> CniError:
    return CniError(skel.INVALID_CONFIG, f"invalid value for {key!r}: {value!r}")


def _port(entry: dict, key: str) -> int:
    value = entry.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise _invalid(f"portMappings.{key}", value)
    return value


def parse_mapping(raw) -> PortMapping:
    """One runtimeConfig.portMappings entry; keys are case-insensitive (containerd capitalises)."""
    if not isinstance(raw, dict):
        raise _invalid("portMappings", raw)
    entry = {str(k).lower(): v for k, v in raw.items()}
    protocol = entry.get("protocol") or "tcp"
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise _invalid("portMappings.protocol", protocol)
    host_ip = entry.get("hostip") or ""
    if not isinstance(host_ip, str):
        raise _invalid("portMappings.hostIP", host_ip)
    if host_ip:
        try:
            # A zone (fe80::1%eth0) parses but iptables cannot match on it.
            if "%" in host_ip:
                raise ValueError(host_ip)
            host_ip = str(ipnet.ip_address(host_ip))
        except ValueError:
            raise _invalid("portMappings.hostIP", host_ip) from None
    return PortMapping(_port(entry, "hostPort"), _port(entry, "containerPort"),
                       protocol.lower(), host_ip)


def _conditions(conf: dict, key: str) -> tuple[str, ...]:
    value = conf.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(key, value)
    # Each entry becomes one argument of a line in the restore file: a control
    # character (a newline above all) would end that line and start another rule.
    if any(not v.isprintable() for v in value):
        raise _invalid(key, value)
    return tuple(value)


def _flag(conf: dict, key: str, default: bool) -> bool:
    value = conf.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(key, value)
    return value


def parse_config(conf: dict) -> Conf:
    """The plugin's configuration; CniError code 7 naming key and value when invalid."""
    runtime = conf.get("runtimeConfig")
    runtime = {} if runtime is None else runtime
    if not isinstance(runtime, dict):
        raise _invalid("runtimeConfig", runtime)
    raw_maps = runtime.get("portMappings")
    raw_maps = [] if raw_maps is None else raw_maps
    if not isinstance(raw_maps, list):
        raise _invalid("portMappings", raw_maps)
    mark_bit, external = conf.get("markMasqBit"), conf.get("externalSetMarkChain")
    if mark_bit is not None and external is not None:
        raise CniError(skel.INVALID_CONFIG,
                       "cannot specify both 'externalSetMarkChain' and 'markMasqBit'")
    if mark_bit is None:
        mark_bit = names.DEFAULT_MASQ_MARK_BIT
    if isinstance(mark_bit, bool) or not isinstance(mark_bit, int) or not (
            0 <= mark_bit <= names.MARK_BIT_MAX):
        raise _invalid("markMasqBit", mark_bit)
    if external is not None:
        try:
            names.ensure_chain_name(external if isinstance(external, str) else "")
        except ValueError:
            raise _invalid("externalSetMarkChain", external) from None
    name = conf.get("name") or ""
    return Conf(name=name if isinstance(name, str) else "",
                mappings=tuple(parse_mapping(m) for m in raw_maps),
                snat=_flag(conf, "snat", True), masq_all=_flag(conf, "masqAll", False),
                mark_bit=mark_bit, external_setmark_chain=external or "",
                conditions=(_conditions(conf, "conditionsV4"),
                            _conditions(conf, "conditionsV6")))


def container_nets(prev_result: dict | None) -> dict[int, ipnet.Interface]:
    """The first IPv4 and first IPv6 address of the container, with their prefix."""
    nets: dict = {}
    for ip in (prev_result or {}).get("ips") or []:
        try:
            iface = ipnet.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError):
            raise CniError(skel.INVALID_CONFIG,
                           f"invalid value for 'prevResult.ips': {ip!r}") from None
        nets.setdefault(iface.version, iface)
    return nets


def _log(msg: str) -> None:
    print(f"kube-router-portmap: {msg}", file=sys.stderr)


class Host:
    """The plugin's side effects, injectable: commands, the lock, /proc, the log."""

    def __init__(self, run=ipt.run_command, lock=None, proc: str = "/proc", log=_log):
        self.run = run
        self.lock = ipt.FileLock() if lock is None else lock
        self.proc = proc
        self.log = log

    def iptables(self, family: int) -> ipt.Iptables:
        return ipt.Iptables(family, self.run)


def routed_interface(ip: ipnet.Address, route_table: str) -> str:
    """The interface of the longest-prefix on-link main-table route to ``ip`` (/proc/net/route).

    Routes through a gateway (RTF_GATEWAY) are skipped: the container sits on a
    link of this host, and route_localnet on the uplink would let 127.0.0.0/8
    sources in from the network.
    """
    best, best_len = "", -1
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or int(fields[3], 16) & 0x2:
            continue
        dst = int.from_bytes(bytes.fromhex(fields[1]), "little")
        mask = int.from_bytes(bytes.fromhex(fields[7]), "little")
        if int(ip) & mask == dst and bin(mask).count("1") > best_len:
            best, best_len = fields[0], bin(mask).count("1")
    return best


def ensure_localnet_guard(host: Host) -> None:
    """The raw-table guard route_localnet needs (lowlevel/localnet.py), put in place before it."""
    ipt.transact(host.iptables(4), localnet.TABLE, localnet.build_guard_restore, host.lock,
                 host.log)


def ensure_route_localnet(host: Host, ip: ipnet.Address) -> None:
    """Let 127.0.0.0/8 sources be routed out to the container (the 127.0.0.1:hostPort case).

    Only after the guard is in place: route_localnet alone lets pods reach the
    node's loopback services.
    """
    ensure_localnet_guard(host)
    with open(f"{host.proc}/net/route") as f:
        ifname = routed_interface(ip, f.read())
    if not ifname:
        host.log(f"no route to {ip}: route_localnet not set")
        return
    with open(f"{host.proc}/sys/net/ipv4/conf/{ifname}/route_localnet", "w") as f:
        f.write("1")


def delete_udp_conntrack(host: Host, family: int, ports: tuple[int, ...]) -> None:
    """Stale UDP flows would keep hitting an old destination: the kernel never re-NATs them."""
    for port in ports:
        proc = host.run(["conntrack", "-D", "-f", f"ipv{family}", "-p", "udp",
                         "--orig-port-dst", str(port)], None)
        # Exit status 1 with "0 flow entries" is the common case: nothing to delete.
        if proc.returncode not in (0, 1):
            host.log(f"conntrack -D udp port {port} (ipv{family}) failed: "
                     f"{proc.stderr.strip()}")


def add(host: Host, conf: Conf, container_id: str, ifname: str, prev_result: dict) -> None:
    """Program every family the container has an address in; on failure undo them all."""
    plans = [rules.build_plan(conf, container_id, ifname, net)
             for _, net in sorted(container_nets(prev_result).items())]
    try:
        for plan in filter(None, plans):
            ipt.transact(host.iptables(plan.family), rules.TABLE,
                         lambda saved: rules.build_add_restore(plan, saved), host.lock, host.log)
            if plan.family == 4 and plan.setmark_chain:
                ensure_route_localnet(host, container_nets(prev_result)[4].ip)
    except BaseException:
        try:
            delete(host, container_id, ifname)
        except Exception as exc:  # the original failure is the one to report
            host.log(f"rolling back after a failed ADD: {exc}")
        raise
    for plan in filter(None, plans):
        delete_udp_conntrack(host, plan.family, plan.udp_ports)


def delete(host: Host, container_id: str, ifname: str) -> None:
    chain = names.portmap_dnat_chain(container_id, ifname)
    for family in (4, 6):
        try:
            ipt.transact(host.iptables(family), rules.TABLE,
                         lambda saved: rules.build_del_restore(chain, saved), host.lock, host.log)
        except ipt.RestoreError:
            raise
        except ipt.IptablesError as exc:
            if family == 4:
                raise
            host.log(f"skipping IPv6: {exc}")  # no ip6tables nat here: nothing of ours


def check(host: Host, conf: Conf, container_id: str, ifname: str, prev_result: dict) -> None:
    problems = []
    for family, net in sorted(container_nets(prev_result).items()):
        plan = rules.build_plan(conf, container_id, ifname, net)
        if plan is not None:
            problems += [f"ipv{family}: {p}"
                         for p in rules.check_plan(plan, host.iptables(family).save(rules.TABLE))]
        if plan is not None and family == 4 and plan.setmark_chain and \
                localnet.build_guard_restore(host.iptables(4).save(localnet.TABLE)):
            problems.append(f"ipv4: the {localnet.PLUGIN_CHAIN} guard is missing from raw "
                            "PREROUTING, or not ahead of its other rules")
    if problems:
        raise CniError(skel.INTERNAL, "hostPort rules do not match the configuration",
                       "; ".join(problems))


def cleanup_stale_chains(host: Host, network: str, attachments: set[tuple[str, str]]) -> None:
    valid = {names.portmap_dnat_chain(cid, ifname) for cid, ifname in attachments}
    for family in (4, 6):
        try:
            stale = rules.build_stale_chains(host.iptables(family).save(rules.TABLE), network, valid)
        except ipt.IptablesError as exc:
            if family == 4:
                raise
            host.log(f"skipping IPv6: {exc}")
            continue
        for chain in stale:
            ipt.transact(host.iptables(family), rules.TABLE,
                         lambda saved: rules.build_del_restore(chain, saved), host.lock, host.log)


def _required_prev(req) -> dict:
    if req.prev_result is None:
        raise CniError(skel.INVALID_CONFIG,
                       "kube-router-portmap must be chained after an interface plugin: "
                       "no prevResult")
    return req.prev_result


def _host_errors(fn, *args):
    try:
        return fn(*args)
    except ipt.IptablesError as exc:
        raise CniError(skel.INTERNAL, str(exc).splitlines()[0], str(exc)) from None
    except OSError as exc:
        raise CniError(skel.IO_FAILURE, str(exc)) from None


def cmd_add(req, host: Host | None = None) -> dict:
    conf = parse_config(req.conf)
    prev = _required_prev(req)
    if conf.mappings:
        _host_errors(add, host or Host(), conf, req.container_id, req.ifname, prev)
    return prev


def cmd_del(req, host: Host | None = None) -> None:
    parse_config(req.conf)
    _host_errors(delete, host or Host(), req.container_id, req.ifname)


def cmd_check(req, host: Host | None = None) -> None:
    conf = parse_config(req.conf)
    prev = _required_prev(req)
    if conf.mappings:
        _host_errors(check, host or Host(), conf, req.container_id, req.ifname, prev)


def cmd_gc(req, host: Host | None = None) -> None:
    """CNI 1.1 GC: remove the chains of attachments the runtime no longer knows."""
    parse_config(req.conf)
    valid = skel.valid_attachments(req.conf)
    _host_errors(cleanup_stale_chains, host or Host(), req.conf.get("name", ""), valid)


def main() -> int:
    return skel.run(sys.modules[__name__])
