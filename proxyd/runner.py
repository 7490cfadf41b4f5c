"""A bounded-frequency runner per controller (kube-proxy's BoundedFrequencyRunner).

* ``request()`` asks for a sync; any number of requests before the sync runs
  are one sync (merging).
* At most ``burst`` syncs start within any ``min_interval``: a change after a
  quiet spell is synced at once, a storm of changes is merged into one sync
  per ``min_interval``.
* Syncs are at most ``max_interval`` apart; a sync is *full* (``fn(True)``: the
  periodic resync, kube-router's ``--*-sync-period``, that reads the kernel and
  repairs drift) when it is the first, follows a failure, or ``max_interval``
  has passed since the last full one; every other sync is ``fn(False)``.
* A failed sync is retried after ``retry_interval``, doubling up to
  ``max_interval``, jittered so many nodes do not retry in lockstep.
* ``heartbeat`` is the wall-clock time of the last successful sync: health
  checks read it.

The scheduling is in ``run_due(now)``, which tests drive with a fake clock;
``start()`` only adds a thread that calls it and sleeps until the next due time.
"""
from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

SyncObserver = Callable[[str, float, BaseException | None], None]
# Every controller's minimum interval, seconds, and how many syncs may start within it:
# a lone change is synced at once, a storm of changes becomes one sync per interval.
MIN_SYNC_INTERVAL = 0.5
SYNC_BURST = 2


class Backoff:
    """Exponential, capped, jittered delays: initial, 2x initial, ... cap."""

    def __init__(self, initial: float, cap: float, factor: float = 2.0, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random):
        self.initial, self.cap, self.factor, self.jitter, self._rng = initial, cap, factor, jitter, rng
        self.failures = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * self.factor ** self.failures)
        self.failures += 1
        return base * (1 + self.jitter * self._rng())

    def reset(self) -> None:
        self.failures = 0


class BoundedFrequencyRunner:
    def __init__(self, name: str, fn: Callable[[bool], None], *, min_interval: float,
                 max_interval: float, retry_interval: float, burst: int = SYNC_BURST,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 observer: SyncObserver | None = None):
        if not 0 <= min_interval <= max_interval:
            raise ValueError(f"{name}: need 0 <= min_interval <= max_interval")
        if burst < 1:
            raise ValueError(f"{name}: burst must be at least 1")
        self.name, self._fn = name, fn
        self.min_interval, self.max_interval = min_interval, max_interval
        self._clock, self._wall = clock, wall_clock
        self._backoff = Backoff(retry_interval, max_interval, rng=rng)
        self._observer = observer
        self._lock = threading.Lock()
        self._pending = False
        self._last_run: float | None = None
        self._starts: collections.deque[float] = collections.deque(maxlen=burst)
        self._last_full: float | None = None
        self._failed = False
        self._retry_at: float | None = None
        self.heartbeat: float | None = None
        self.runs = 0
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._pending = True
        self._wake.set()

    def next_due(self) -> float:
        """Monotonic time the next sync is due (inf: nothing to do until requested)."""
        with self._lock:
            return self._due()

    def _due(self) -> float:
        if self._last_run is None:
            return -math.inf if self._pending else math.inf
        full = len(self._starts) == self._starts.maxlen
        earliest = self._starts[0] + self.min_interval if full else -math.inf
        due = self._last_run + self.max_interval
        if self._pending:
            due = min(due, earliest)
        if self._retry_at is not None:
            due = min(due, max(self._retry_at, earliest))
        return due

    def run_due(self, now: float | None = None) -> float:
        """Sync if one is due at ``now``; return the seconds until the next one is due."""
        now = self._clock() if now is None else now
        with self._lock:
            due = self._due()
            if now < due:
                return due - now
            self._pending = False
            self._last_run = now
            self._starts.append(now)
            full = (self._failed or self._last_full is None
                    or now - self._last_full >= self.max_interval)
        self._run_once(now, full)
        with self._lock:
            return max(0.0, self._due() - now)

    def _run_once(self, now: float, full: bool) -> None:
        started = self._clock()
        error: BaseException | None = None
        try:
            self._fn(full)
        except Exception as e:  # a failed sync is retried, never fatal
            error = e
            delay = self._backoff.next()
            log.error("%s: sync failed, retrying in %.1fs: %s", self.name, delay, e, exc_info=True)
            with self._lock:
                self._retry_at = now + delay
                self._failed = True
                self.failures += 1
        else:
            self._backoff.reset()
            with self._lock:
                self._retry_at = None
                self._failed = False
                if full:
                    self._last_full = now
                self.heartbeat = self._wall()
        finally:
            self.runs += 1
        if self._observer:
            self._observer(self.name, self._clock() - started, error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"runner-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.run_due()
            self._wake.wait(None if math.isinf(delay) else delay)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the sync in progress, if any; never interrupts a sync."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
