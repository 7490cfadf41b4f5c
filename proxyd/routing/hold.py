"""Routes kept while BGP catches up: the local half of graceful restart.

A restarted daemon, or a restarted gobgpd, starts with an empty RIB; a peer
whose gobgpd restarts withdraws nothing it meant to withdraw, it just goes
quiet. Turning "not learned right now" straight into "delete the kernel
route" cut pod traffic for the seconds BGP needs to come back (gobgpd waits
5-10 s before it connects). So a route this node installed is kept while the
peer it came from is still wanted (its Node object, or --peer-router-ips,
still names it) and has not caught up: caught up means its session has been
established for ``settle`` seconds. Once it has, only what it no longer
announces goes. Routes found in the kernel at start, not yet tied to a peer,
are kept until every wanted peer has caught up. No route is kept longer than
``bound`` seconds after its peer (or, for those found at start, the daemon)
was last seen caught up. A peer that is no longer wanted loses its routes at once.

This is done whatever --bgp-graceful-restart says: it only ever delays a
removal, by at most ``bound``, and only for a peer that cannot be heard.
Pure: the controller hands in the clock's time, the learned paths and the
peers' states.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

SETTLE_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class HeldPath:
    prefix: str
    nexthop: str
    peer: str | None          # the peer it was learned from; None: found in the kernel


class RouteHold:
    def __init__(self, bound: float, settle: float = SETTLE_SECONDS):
        self.bound, self.settle = bound, settle
        self._paths: dict[str, HeldPath] = {}          # prefix -> what the kernel was given
        self._up_since: dict[str, float] = {}          # peer -> established since (as seen)
        self._waiting_since: dict[str, float] = {}     # peer -> not caught up since (as seen)
        self._ever_caught_up: set[str] = set()
        self._started: float | None = None
        self.held: list[HeldPath] = []                 # kept by the last ``paths`` call

    def adopt(self, installed: Iterable[tuple[str, str]], now: float) -> None:
        """At start: the (prefix, next hop) routes of ours already in the kernel."""
        self._started = now
        for prefix, nexthop in installed:
            self._paths.setdefault(prefix, HeldPath(prefix, nexthop, None))

    def sessions_reset(self) -> None:
        """A new gobgpd (or a restarted speaker): every session starts over, so every
        peer has to be seen established for ``settle`` seconds again."""
        self._up_since.clear()

    def paths(self, learned: Iterable[HeldPath], wanted: Iterable[str],
              established: Mapping[str, bool], now: float) -> list[HeldPath]:
        """What the kernel should route: every learned path, plus the ones still held."""
        if self._started is None:
            self._started = now
        wanted = set(wanted)
        caught_up = self._observe(wanted, established, now)
        current = {p.prefix: p for p in learned}
        self.held = [old for prefix, old in sorted(self._paths.items())
                     if prefix not in current and self._keep(old, wanted, caught_up, now)]
        self._paths = {**current, **{p.prefix: p for p in self.held}}
        return sorted(self._paths.values(), key=lambda p: p.prefix)

    def _observe(self, wanted: set[str], established: Mapping[str, bool],
                 now: float) -> set[str]:
        caught_up = set()
        for peer in wanted:
            if established.get(peer):
                if now - self._up_since.setdefault(peer, now) >= self.settle:
                    caught_up.add(peer)
            else:
                self._up_since.pop(peer, None)
        for peer in wanted - caught_up:
            self._waiting_since.setdefault(peer, self._started if peer not in
                                           self._ever_caught_up else now)
        for peer in caught_up:
            self._waiting_since.pop(peer, None)
        self._ever_caught_up |= caught_up
        for table in (self._up_since, self._waiting_since):
            for peer in list(table.keys() - wanted):
                del table[peer]
        return caught_up

    def _peer_of(self, path: HeldPath, wanted: set[str]) -> str | None:
        if path.peer is None and path.nexthop in wanted:
            return path.nexthop       # found at start, via a node peer's address
        return path.peer

    def _keep(self, path: HeldPath, wanted: set[str], caught_up: set[str], now: float) -> bool:
        peer = self._peer_of(path, wanted)
        if peer is None:              # found at start, from a peer it cannot name
            return bool(wanted - self._ever_caught_up) and now - self._started < self.bound
        if peer not in wanted or peer in caught_up:
            return False
        return now - self._waiting_since[peer] < self.bound

    def next_check(self, wanted: Iterable[str], now: float) -> float | None:
        """Seconds until a held path may be released (a peer settling, a bound running
        out); None when nothing is held."""
        if not self.held:
            return None
        wanted = set(wanted)
        times = [since + self.settle for since in self._up_since.values()]
        for path in self.held:
            peer = self._peer_of(path, wanted)
            times.append((self._started if peer is None else self._waiting_since[peer])
                         + self.bound)
        upcoming = [t - now for t in times if t > now]
        return min(upcoming) if upcoming else 0.05
