"""The daemon as a library: informers -> trackers -> runners -> controllers; health, metrics,
a failing sync that is retried, caches that never sync, and SIGTERM on the real process."""
import logging
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fakeapi import http_get as get

from proxyd import cli
from proxyd.daemon import Daemon, DaemonError
from proxyd.k8s.client import KINDS
from proxyd.runner import Backoff

ROOT = pathlib.Path(__file__).resolve().parents[3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingController:
    """Records what each sync saw; raises while processing a chosen object."""
    name = "recorder"
    kinds = ("pods", "services")
    sync_period = 3600.0
    min_sync_interval = 0.0

    def __init__(self):
        self.syncs = []
        self.poison = None
        self.cond = threading.Condition()

    def sync(self, ctx):
        seen = []
        for change in ctx.each_change():
            if change.key == self.poison:
                raise ValueError("cannot handle this object")
            seen.append((change.kind, change.key, change.current is None))
        with self.cond:
            self.syncs.append((seen, {k: len(s) for k, s in ctx.stores.items()}))
            self.cond.notify_all()

    def wait(self, count, timeout=5.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.syncs) >= count, timeout), self.syncs
        return self.syncs


def config_for(api, *extra):
    config, _ = cli.parse_args([f"--master={api.url}", "--hostname-override=node-a",
                                "--cache-sync-timeout=5s", *extra])
    return config


@pytest.fixture
def daemon_with(api):
    made = []

    def make(controller, *extra, **options):
        options.setdefault("informer_options", {"rng": lambda: 0.0,
                                                "backoff": Backoff(0.05, 0.5, jitter=0)})
        d = Daemon(config_for(api, *extra), [controller], **options)
        made.append(d)
        d.start()
        return d
    yield make
    for d in made:
        d.stop()


def test_first_sync_sees_full_caches_then_only_changes(api, daemon_with):
    api.put(KINDS["pods"].path, "a", "default")
    api.put(KINDS["services"].path, "web", "default")
    ctl = RecordingController()
    hport, mport = free_port(), free_port()
    d = daemon_with(ctl, f"--health-port={hport}", f"--metrics-port={mport}", "--health-addr=127.0.0.1",
                    "--metrics-addr=127.0.0.1")
    first = ctl.wait(1)[0]
    assert first == ([("pods", "default/a", False), ("services", "default/web", False)],
                     {"pods": 1, "services": 1})
    api.put(KINDS["pods"].path, "b", "default")
    api.delete(KINDS["services"].path, "default/web")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(len(s[0]) for s in ctl.syncs) < 4:
        time.sleep(0.01)
    later = [c for seen, _ in ctl.syncs[1:] for c in seen]
    assert sorted(later) == [("pods", "default/b", False), ("services", "default/web", True)]
    assert d.node_name == "node-a"
    assert get(hport, "/healthz") == (200, "ok\n")
    status, body = get(mport, "/metrics")
    assert status == 200
    assert 'kube_router_informer_events_total{kind="Pod",type="ADDED"} 1.0' in body
    assert 'kube_router_informer_events_total{kind="Service",type="DELETED"} 1.0' in body
    assert f'kube_router_controller_sync_duration_seconds_count{{controller="recorder"}} {len(ctl.syncs)}.0' in body


def test_a_crashing_sync_is_logged_with_the_object_and_retried(api, daemon_with, caplog):
    caplog.set_level(logging.ERROR)
    ctl = RecordingController()
    d = daemon_with(ctl)
    ctl.wait(1)
    ctl.poison = "default/bad"
    api.put(KINDS["pods"].path, "bad", "default")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and d.runners["recorder"].failures < 2:
        time.sleep(0.01)
    assert d.runners["recorder"].failures >= 2          # retried, daemon still up
    assert "recorder at pods default/bad: ValueError: cannot handle this object" in caplog.text
    ctl.poison = None                                   # the cause goes away: the change is not lost
    syncs = ctl.wait(2, timeout=10)
    assert ("pods", "default/bad", False) in syncs[1][0]


def test_caches_that_never_sync_stop_the_start(api):
    api.fail_lists = 10_000
    d = Daemon(config_for(api, "--cache-sync-timeout=300ms"), [RecordingController()],
               informer_options={"backoff": Backoff(0.05, 0.1, jitter=0)})
    try:
        with pytest.raises(DaemonError, match="cache did not sync within --cache-sync-timeout=0.3s"):
            d.start()
    finally:
        d.stop()


SCRIPT = textwrap.dedent("""
    import sys
    from proxyd import cli, daemon

    class Ctl:
        name, kinds, sync_period, min_sync_interval = "probe", ("nodes",), 3600.0, 0.0
        def sync(self, ctx):
            print("synced", len(ctx.stores["nodes"]), flush=True)

    config, _ = cli.parse_args(sys.argv[1:])
    sys.exit(daemon.run(config, controllers=[Ctl()]))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_start_up_time(api, tmp_path, sig):
    api.put(KINDS["nodes"].path, "node-a")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    port = free_port()
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), f"--master={api.url}", f"--health-port={port}",
                             "--health-addr=127.0.0.1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "synced 1"
        started = time.monotonic() - began
        assert get(port, "/healthz") == (200, "ok\n")
        print(f"\ndaemon start-up (spawn -> first sync): {started * 1e3:.0f} ms")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "kernel state is left in place" in err
    assert "Traceback" not in err
    assert started < 5.0
