"""The guard route_localnet needs: no packet from outside the node reaches 127.0.0.0/8.

``route_localnet=1`` on an interface (portmap sets it on the pod bridge so a
hostPort answers on 127.0.0.1) turns off the kernel's martian check for
loopback addresses arriving on that interface. A pod able to route 127.0.0.1
via its gateway then reaches every service listening on the node's loopback
(CVE-2020-8558): gobgpd's API, the kubelet's, a database bound to localhost.

The guard drops, in the raw table's PREROUTING (before conntrack, so a flood
of them costs no connection-tracking entries), every packet that entered on an
interface other than ``lo`` with a 127.0.0.0/8 destination or source. Nothing
legitimate looks like that: the node's own traffic to 127.0.0.1 comes in on
``lo``; a hostPort reached through 127.0.0.1 leaves masqueraded to the bridge
address, so its replies carry that address until conntrack undoes the NAT,
after this hook. (kube-proxy's rule for the same hole is stateful and lets a
spoofed 127.0.0.0/8 source through; this one does not.)

IPv4 only: IPv6 has no route_localnet, and the kernel always drops ::1 from
the wire. The guard is never removed by a DEL: route_localnet, once set, stays.
Rules are written exactly as iptables-save prints them, so an unchanged guard
costs one ``iptables-save -t raw`` and no restore.
"""
from __future__ import annotations

TABLE = "raw"
COMMENT = "drop loopback addresses from outside the node"
# The plugin's chain, and the daemon's with the same rules (proxyd/kernel/names.py
# names it from here): either alone closes the hole, and removing one (kube-router
# --cleanup-config) leaves the other in place.
# never change: upgrades depend on it
PLUGIN_CHAIN = "KRT-LOCALNET-GUARD"
# never change: upgrades depend on it
DAEMON_CHAIN = "KUBE-ROUTER-LOCALNET"
GUARD_CHAINS = (DAEMON_CHAIN, PLUGIN_CHAIN)


def guard_rules() -> tuple[str, ...]:
    return tuple(f'{match} ! -i lo -m comment --comment "{COMMENT}" -j DROP'
                 for match in ("-d 127.0.0.0/8", "-s 127.0.0.0/8"))


def guard_jump(chain: str) -> str:
    return f"-j {chain}"


def build_guard_restore(saved, chain: str = PLUGIN_CHAIN) -> str:
    """Restore text putting the guard ahead of every other rule in PREROUTING; "" when it is.

    ``saved`` is the raw table as iptables-save showed it (lowlevel.xtables.SavedTable).
    The chain is (re)declared whole when its rules differ. An ACCEPT earlier in
    raw PREROUTING would let a martian past the guard, so the jump must be
    among the leading rules, which may only be jumps to the guard chains (the
    daemon's sits first once it runs: neither moves the other).
    """
    lines = []
    if saved.rules(chain) != list(guard_rules()) or not saved.has_chain(chain):
        lines.append(f":{chain} - [0:0]")
        lines += [f"-A {chain} {rule}" for rule in guard_rules()]
    jumps, leading = [guard_jump(c) for c in GUARD_CHAINS], []
    for rule in saved.rules("PREROUTING"):
        if rule not in jumps:
            break
        leading.append(rule)
    if guard_jump(chain) not in leading or leading.count(guard_jump(chain)) > 1:
        lines += [f"-D PREROUTING {rule}" for rule in saved.rules("PREROUTING")
                  if rule == guard_jump(chain)]
        lines.append(f"-I PREROUTING 1 {guard_jump(chain)}")
    if not lines:
        return ""
    return "\n".join([f"*{TABLE}", *lines, "COMMIT", ""])
