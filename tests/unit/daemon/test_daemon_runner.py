"""The bounded-frequency runner, driven by a fake clock: no sleeps."""
import math
import threading

import pytest

from proxyd.runner import Backoff, BoundedFrequencyRunner


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Sync:
    def __init__(self):
        self.calls = []
        self.fail = 0

    def __call__(self, full):
        self.calls.append(full)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")


def make(min_interval=2.0, max_interval=60.0, retry=1.0, burst=1, **kw):
    clock, sync, seen = Clock(), Sync(), []
    runner = BoundedFrequencyRunner("test", sync, min_interval=min_interval, max_interval=max_interval,
                                    retry_interval=retry, burst=burst, clock=clock, wall_clock=clock,
                                    rng=lambda: 0.0, observer=lambda *a: seen.append(a), **kw)
    return runner, clock, sync, seen


def test_nothing_runs_until_requested():
    runner, clock, sync, _ = make()
    assert runner.run_due() == math.inf and sync.calls == []


def test_many_requests_merge_into_one_run():
    runner, clock, sync, _ = make()
    for _ in range(50):
        runner.request()
    runner.run_due()
    runner.run_due()
    assert len(sync.calls) == 1 and runner.heartbeat == clock.now


def test_min_interval_holds_back_a_request():
    runner, clock, sync, _ = make(min_interval=2.0)
    runner.request()
    runner.run_due()
    runner.request()
    clock.now += 1.5
    assert runner.run_due() == pytest.approx(0.5) and len(sync.calls) == 1
    clock.now += 0.5
    runner.run_due()
    assert len(sync.calls) == 2


def test_a_burst_runs_at_once_then_min_interval_holds():
    runner, clock, sync, _ = make(min_interval=2.0, burst=2)
    runner.request()
    runner.run_due()
    clock.now += 0.1
    runner.request()
    assert runner.run_due() > 0 and len(sync.calls) == 2       # the second change: at once
    clock.now += 0.1
    runner.request()
    assert runner.run_due() == pytest.approx(1.8) and len(sync.calls) == 2
    clock.now += 1.8
    runner.run_due()
    assert len(sync.calls) == 3


def test_full_sync_first_after_the_period_and_after_a_failure():
    runner, clock, sync, _ = make(min_interval=0.0, max_interval=60.0, retry=1.0)
    runner.request()
    runner.run_due()                      # the first: full
    clock.now += 10
    runner.request()
    runner.run_due()                      # a change: incremental
    sync.fail = 1
    clock.now += 10
    runner.request()
    runner.run_due()                      # a change that fails ...
    clock.now += 1
    runner.run_due()                      # ... is retried as a full sync
    clock.now += 30
    runner.request()
    runner.run_due()                      # 30 s after the last full one: incremental
    clock.now += 30
    runner.request()
    runner.run_due()                      # 60 s after it: full, although a change asked
    assert sync.calls == [True, False, False, True, False, True]


def test_max_interval_runs_without_requests():
    runner, clock, sync, _ = make(max_interval=60.0)
    runner.request()
    runner.run_due()
    clock.now += 59.9
    assert runner.run_due() == pytest.approx(0.1) and len(sync.calls) == 1
    clock.now += 0.1
    assert runner.run_due() == pytest.approx(60.0) and len(sync.calls) == 2


def test_failure_retries_with_backoff_then_recovers():
    runner, clock, sync, seen = make(min_interval=0.5, max_interval=60.0, retry=1.0)
    sync.fail = 3
    runner.request()
    delays = []
    for _ in range(4):
        delay = runner.run_due()
        delays.append(delay)
        clock.now += delay
    assert delays == pytest.approx([1.0, 2.0, 4.0, 60.0])   # 3 failures, then a success: back to the period
    assert len(sync.calls) == 4 and runner.failures == 3
    assert runner.heartbeat == clock.now - 60.0
    assert [err is None for _name, _dur, err in seen] == [False, False, False, True]


def test_retry_respects_min_interval():
    runner, clock, sync, _ = make(min_interval=5.0, retry=1.0)
    sync.fail = 1
    runner.request()
    assert runner.run_due() == pytest.approx(5.0)


def test_heartbeat_only_on_success():
    runner, clock, sync, _ = make()
    sync.fail = 1
    runner.request()
    runner.run_due()
    assert runner.heartbeat is None


def test_backoff_caps_and_jitters():
    b = Backoff(0.5, 4.0, jitter=0.5, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.75, 1.5, 3.0, 6.0, 6.0, 6.0]
    b.reset()
    assert b.next() == 0.75


def test_thread_wakes_on_request_and_stops():
    ran = threading.Event()
    runner = BoundedFrequencyRunner("t", lambda full: ran.set(), min_interval=0, max_interval=3600, retry_interval=1)
    runner.start()
    assert not ran.wait(0.1)
    runner.request()
    assert ran.wait(2)
    runner.stop()
    assert not runner._thread.is_alive()


def test_bad_intervals_rejected():
    with pytest.raises(ValueError):
        BoundedFrequencyRunner("x", lambda full: None, min_interval=10, max_interval=5, retry_interval=1)
    with pytest.raises(ValueError):
        BoundedFrequencyRunner("x", lambda full: None, min_interval=1, max_interval=5,
                               retry_interval=1, burst=0)
