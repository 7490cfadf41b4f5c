"""Catching up after an API server outage: one shared probe, run only while the server seems
gone, and every informer waiting in its backoff re-listing as soon as the probe sees it back."""
import math
import queue
import threading
import time

import pytest

from proxyd.k8s.client import KINDS, ApiError
from proxyd.k8s.informer import Informer
from proxyd.k8s.reachability import Reachability
from proxyd.runner import Backoff

REFUSED = ApiError(0, "NewConnectionError: connection refused")


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


class Server:
    """The fake probe's answer, and how many times it was asked."""

    def __init__(self):
        self.up, self.asked = True, 0

    def probe(self):
        self.asked += 1
        return self.up


@pytest.fixture
def reach():
    server, clock, wall = Server(), Clock(), Clock(1_700_000_000.0)
    r = Reachability(server.probe, interval=1.0, jitter=0.1, clock=clock, wall_clock=wall,
                     rng=lambda: 0.5)
    return r, server, clock, wall


def advance(r, clock, seconds):
    """Run the probe's schedule over ``seconds`` of fake time, as its thread would."""
    end = clock.now + seconds
    while True:
        delay = r.run_due()
        if math.isinf(delay) or clock.now + delay > end:
            clock.now = end
            return
        clock.now += delay


def test_errors_with_an_answer_never_start_the_probe(reach):
    r, server, clock, _ = reach
    for status in (403, 429, 500):
        r.failed(ApiError(status, "refused by the server"))
    r.failed(ValueError("a bad body"))
    advance(r, clock, 30)
    assert server.asked == 0 and r.status() == {"reachable": True, "unreachable_since": None}


def test_outage_one_probe_a_second_for_all_informers_then_one_return(reach):
    r, server, clock, wall = reach
    server.up = False
    failed_at = wall.now
    for _ in range(6):                   # every informer's watch breaks at once
        r.failed(REFUSED)
    wall.now += 0.5
    advance(r, clock, 0.49)
    assert server.asked == 0             # the first probe waits rng * interval: spreads nodes
    advance(r, clock, 0.02)
    assert server.asked == 1
    assert r.status() == {"reachable": False, "unreachable_since": failed_at}
    for _ in range(6):                   # their backoff re-lists fail too: no extra probes
        r.failed(REFUSED)
    advance(r, clock, 19.5)
    assert 19 <= server.asked <= 21      # one a second for the daemon, not per informer
    assert r.returns == 0
    server.up = True
    advance(r, clock, 1.0)
    assert r.returns == 1 and r.status() == {"reachable": True, "unreachable_since": None}
    asked = server.asked
    advance(r, clock, 60)
    assert server.asked == asked         # back: no probing until the next failure


def test_a_blip_the_probe_finds_answered_counts_no_return(reach):
    r, server, clock, _ = reach
    r.failed(REFUSED)
    advance(r, clock, 5)
    assert server.asked == 1 and r.returns == 0 and r.status()["reachable"]


def test_a_successful_list_ends_the_outage_before_the_probe(reach):
    r, server, clock, _ = reach
    server.up = False
    r.failed(REFUSED)
    advance(r, clock, 1)
    assert not r.status()["reachable"]
    r.answered()
    assert r.returns == 1 and r.status()["reachable"]
    r.answered()
    assert r.returns == 1


def test_a_probe_that_raises_counts_as_unreachable():
    clock = Clock()
    r = Reachability(lambda: 1 / 0, clock=clock, rng=lambda: 0.5)
    r.failed(REFUSED)
    advance(r, clock, 1)
    assert r.status()["reachable"] is False


def test_wait_for_return_wakes_at_the_return_and_on_stop():
    stopped = threading.Event()
    r = Reachability(lambda: True)
    r.reachable = False
    began = time.monotonic()
    assert r.wait_for_return(0, 0.05, stopped.is_set) is False
    assert time.monotonic() - began >= 0.05
    threading.Timer(0.05, r.answered).start()
    began = time.monotonic()
    assert r.wait_for_return(0, 10, stopped.is_set) is True
    assert time.monotonic() - began < 1
    assert r.wait_for_return(0, 10, stopped.is_set) is True     # a return already past
    threading.Timer(0.05, lambda: (stopped.set(), r.interrupt())).start()
    began = time.monotonic()
    assert r.wait_for_return(1, 10, stopped.is_set) is False
    assert time.monotonic() - began < 1


class FakeKube:
    """A client whose server can vanish: lists and watches then get no answer at all."""

    def __init__(self):
        self.up = True
        self.list_status = 200
        self.lists: list[float] = []
        self.streams: list["Stream"] = []
        self.items = [{"metadata": {"name": "default", "resourceVersion": "1"}}]

    def list(self, kind, timeout=60.0):
        self.lists.append(time.monotonic())
        if not self.up:
            raise REFUSED
        if self.list_status != 200:
            raise ApiError(self.list_status, "internal error")
        return list(self.items), "10"

    def watch(self, kind, rv, timeout_seconds, read_timeout):
        if not self.up:
            raise REFUSED
        self.streams.append(Stream())
        return self.streams[-1]

    def probe(self):
        return self.up

    def cut(self):
        """The server goes away: every open watch breaks."""
        self.up = False
        for stream in self.streams:
            stream.events.put(REFUSED)


class Stream:
    def __init__(self):
        self.events = queue.Queue()

    def __iter__(self):
        while True:
            item = self.events.get()
            if item is None:
                return
            raise item

    def abort(self):
        self.events.put(None)


@pytest.fixture
def informer():
    kube = FakeKube()
    reach = Reachability(kube.probe, interval=0.05).start()
    inf = Informer(kube, KINDS["namespaces"], reachability=reach, rng=lambda: 0.0,
                   backoff=Backoff(3.0, 30.0, jitter=0.0))
    inf.start()
    assert inf.wait_for_sync(5)
    yield inf, kube, reach
    inf.stop()
    reach.stop()


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.005)
    return pred()


def test_informer_relists_when_the_server_returns_not_after_its_backoff(informer):
    inf, kube, reach = informer
    kube.cut()
    assert wait_until(lambda: not reach.status()["reachable"], 2)
    time.sleep(0.3)
    assert len(kube.lists) == 1          # waiting 3 s: no list while the server is gone
    assert inf.store.get("default") is not None      # the cache is kept as it was
    kube.items.append({"metadata": {"name": "new", "resourceVersion": "2"}})
    kube.up = True
    back = time.monotonic()
    assert wait_until(lambda: inf.store.get("new") is not None, 2)
    assert time.monotonic() - back < 0.5, "re-listed after the backoff, not at the return"
    assert reach.returns == 1 and reach.status()["reachable"]


def test_an_error_the_server_answers_keeps_the_backoff(informer):
    inf, kube, reach = informer
    kube.list_status = 500
    kube.streams[-1].events.put(ApiError(500, "watch failed"))
    time.sleep(1.0)
    assert len(kube.lists) == 1 and reach.probes == 0     # no probe, no early re-list
    assert inf.store.get("default") is not None
