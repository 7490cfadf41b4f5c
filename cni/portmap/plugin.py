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
from cni.portmap import rules
from cni.portmap.config import Conf, container_nets, parse_config
from cni.skel import CniError
from lowlevel import ipnet, localnet
from lowlevel import xtables as ipt


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
    """The raw-table guard route_localnet needs (lowlevel/localnet.py), put in place before it.

    Almost always it is already there: that is seen without the lock, so a burst of
    ADDs does not queue on the xtables lock for a read. Only a write takes the lock
    (and reads again under it)."""
    tables = host.iptables(4)
    if not localnet.build_guard_restore(tables.save(localnet.TABLE)):
        return
    ipt.transact(tables, localnet.TABLE, localnet.build_guard_restore, host.lock, host.log)


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
