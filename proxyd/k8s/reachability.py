"""Whether the API server answers, shared by every informer of a daemon.

An informer whose list or watch fails waits a capped exponential backoff
before it lists again (up to 30 s, as client-go's reflector). After an outage
that alone would leave a node blind for up to the cap once the server is
back. So, while some request has failed without any answer from the server,
one cheap probe per daemon (the client's ``probe()``: GET /readyz through the
same configuration) runs about once a second; when the server answers again,
every informer waiting in its backoff re-lists at once.

The probe only runs while the server is suspected gone: a server that
answers but refuses the list (403, 500, 429) leaves the informers on their
backoff, so a broken list never turns into a re-list every second, and
during an outage each node costs one probe a second, not one list per
informer. The first probe waits a random part of the interval and each later
one is jittered, so nodes that lost the server at the same moment do not
probe, nor re-list on its return, in lockstep.

The scheduling is in ``run_due(now)``, which tests drive with a fake clock
and probe; ``start()`` only adds a thread that calls it.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import Callable

from proxyd.k8s.client import ApiError

log = logging.getLogger(__name__)

# No answer at all, or a proxy/load balancer in front of the server saying it has none.
NO_SERVER = frozenset({0, 502, 503, 504})


def suggests_unreachable(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.status in NO_SERVER


class Reachability:
    def __init__(self, probe: Callable[[], bool], *, interval: float = 1.0, jitter: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random):
        self._probe, self.interval, self.jitter = probe, interval, jitter
        self._clock, self._wall, self._rng = clock, wall_clock, rng
        self._cond = threading.Condition()
        self.reachable = True
        self.unreachable_since: float | None = None   # wall time of the first failure
        self._suspect_since: float | None = None
        self._probe_at: float | None = None           # monotonic; None: not probing
        self.returns = 0        # how many times the server came back after being unreachable
        self.probes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def failed(self, error: BaseException) -> None:
        """A request failed; one that got no answer from the server starts the probe."""
        if not suggests_unreachable(error):
            return
        with self._cond:
            if self._probe_at is None:
                self._probe_at = self._clock() + self._rng() * self.interval
                if self.reachable and self._suspect_since is None:
                    self._suspect_since = self._wall()
        self._wake.set()

    def answered(self) -> None:
        """A request succeeded: the server is reachable (maybe before the probe noticed)."""
        with self._cond:
            if not self.reachable:
                self._mark_reachable()

    def _mark_reachable(self) -> None:
        log.info("the API server answers again (unreachable for %.1fs): listing every kind",
                 self._wall() - (self.unreachable_since or self._wall()))
        self.reachable, self.unreachable_since, self._suspect_since = True, None, None
        self.returns += 1
        self._cond.notify_all()

    def wait_for_return(self, seen: int, timeout: float, stopped: Callable[[], bool]) -> bool:
        """Wait up to ``timeout``; True as soon as the server came back after ``returns`` was
        ``seen``. ``interrupt()`` makes every waiter look at ``stopped`` again."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.returns == seen and not stopped():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self.returns != seen

    def interrupt(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def status(self) -> dict:
        """Only the state and when it began: nothing about the server or the error."""
        with self._cond:
            return {"reachable": self.reachable, "unreachable_since": self.unreachable_since}

    def run_due(self, now: float | None = None) -> float:
        """Probe if one is due at ``now``; return the seconds until the next one (inf: none)."""
        now = self._clock() if now is None else now
        with self._cond:
            if self._probe_at is None:
                return math.inf
            if now < self._probe_at:
                return self._probe_at - now
        ok = self._probe_safely()
        with self._cond:
            self.probes += 1
            if ok:
                if not self.reachable:
                    self._mark_reachable()
                self._suspect_since, self._probe_at = None, None
                return math.inf
            if self.reachable:
                self.reachable = False
                self.unreachable_since = self._suspect_since or self._wall()
                log.warning("the API server is unreachable; probing it every %gs", self.interval)
            self._probe_at = now + self.interval * (1 - self.jitter + 2 * self.jitter * self._rng())
            return self._probe_at - now

    def _probe_safely(self) -> bool:
        try:
            return bool(self._probe())
        except Exception:  # a probe that cannot even be made says nothing good about the server
            log.debug("API server probe failed", exc_info=True)
            return False

    def start(self) -> "Reachability":
        self._thread = threading.Thread(target=self._loop, name="api-reachability", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.run_due()
            self._wake.wait(None if math.isinf(delay) else delay)
            self._wake.clear()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
