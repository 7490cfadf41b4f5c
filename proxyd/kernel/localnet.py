"""The daemon's localnet guard: no packet from outside the node reaches 127.0.0.0/8.

The same raw-table rules as the portmap plugin's guard (lowlevel/localnet.py says
why they are needed and why nothing legitimate is dropped), in a chain of the
daemon's own, kept first in raw PREROUTING. The plugin puts its guard in place
before it sets route_localnet; the daemon keeps one on every node it runs on,
whatever sets route_localnet there, and repairs it if it goes. kube-proxy
carries a rule for the same hole; this daemon replaces kube-proxy.

It runs as a controller that reads nothing from the API: the runner applies it
at start and every ``SYNC_PERIOD`` seconds (one ``iptables-save -t raw``; a
restore only when something is missing).
"""
from __future__ import annotations

from lowlevel.localnet import TABLE, guard_jump, guard_rules
from proxyd.kernel import names
from proxyd.kernel.iptables import TableApplier
from proxyd.kernel.state import Chain, Hook

SYNC_PERIOD = 60.0


def desired_guard() -> tuple[list[Chain], list[Hook]]:
    chain = names.LOCALNET_GUARD_CHAIN
    return [Chain(chain, guard_rules())], [Hook("PREROUTING", guard_jump(chain))]


class LocalnetGuard:
    name = "localnet-guard"
    kinds: tuple[str, ...] = ()
    sync_period = SYNC_PERIOD
    min_sync_interval = 1.0

    def __init__(self, config=None, node_name: str = "", *, applier: TableApplier | None = None):
        self.applier = applier or TableApplier(4, TABLE, names.is_localnet_chain)

    def sync(self, ctx) -> None:
        self.applier.apply(*desired_guard())


def cleanup_localnet_guard(config=None, *, applier: TableApplier | None = None) -> list[str]:
    """--cleanup-config: the daemon's guard goes; the plugin's, if any, stays."""
    return (applier or TableApplier(4, TABLE, names.is_localnet_chain)).cleanup()
