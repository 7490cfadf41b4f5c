"""What the scale benchmarks share: a real daemon in-process, and waiting for it to catch up."""
from __future__ import annotations

import time

from proxyd.daemon import Daemon


def start_daemon(config, controller) -> tuple[Daemon, float]:
    """A daemon running only ``controller``; once its first sync succeeded, the daemon
    and how long that sync took (from its caches to the kernel)."""
    durations, sync = [], controller.sync

    def timed(ctx):
        t0 = time.perf_counter()
        sync(ctx)
        durations.append(time.perf_counter() - t0)
    controller.sync = timed
    daemon = Daemon(config, [controller])
    daemon.start()
    runner = daemon.runners[controller.name]
    while runner.heartbeat is None:
        if runner.failures:
            raise RuntimeError(f"the {controller.name}'s first sync failed (see the log)")
        time.sleep(0.002)
    return daemon, durations[0]


def covered(controller: str, kind: str, daemon: Daemon, version: str,
            timeout: float = 120.0) -> float:
    """Seconds until a successful sync of ``controller`` covered ``kind`` at ``version``."""
    t0 = time.perf_counter()
    while int(daemon.synced_versions.get(controller, {}).get(kind) or 0) < int(version):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{kind} at resourceVersion {version} not synced in {timeout}s")
        time.sleep(0.0005)
    return time.perf_counter() - t0


def in_namespace(role: str, config, load, start, measure) -> dict:
    """In a private network namespace: the embedded API server (``config``) filled by
    ``load(server)``, a daemon from ``start(server)`` -> (daemon, first sync seconds), then
    ``measure(server, daemon, ns)`` -> figures; those figures with "full" (the first sync).
    Server, daemon and namespace are gone afterwards, also on failure."""
    from krsim.apiserver import ApiServer
    from krsim.netns import Netns
    ns = Netns(role)

    def body():
        server = ApiServer(config)
        load(server)
        server.start()
        daemon = None
        try:
            daemon, full = start(server)
            return {**measure(server, daemon, ns), "full": full}
        finally:
            if daemon is not None:
                daemon.stop()
            server.stop()
    try:
        return ns.call(body)
    finally:
        ns.delete()
