"""One informer per kind: list, diff against the cache, watch, re-list on trouble.

kubernetes' own ``SharedInformer`` and ``Watch`` are not used: the first has no
has_synced and no bookmarks and reports every object as MODIFIED on each
re-list; the second retries an expired resourceVersion once, then raises.

The loop:
  list -> Store.replace (DELETED for keys gone while we were away; ADDED /
  MODIFIED only where the resourceVersion moved) -> has_synced -> watch from
  the list's resourceVersion with bookmarks and a jittered timeout; a watch
  that ends normally is resumed from the last resourceVersion seen; 410 Gone
  re-lists at once, any other error re-lists after a capped, jittered backoff,
  cut short when the daemon's shared ``Reachability`` sees the server come
  back from an outage (client-go re-lists as soon as a watch connects).

A failed list changes nothing in the store: during an outage the caches, and
so what the controllers enforce, stay exactly as they were.
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Callable, Mapping

from proxyd.k8s.cache import IndexFunc, Store, object_key
from proxyd.k8s.client import ApiError, Kind, KubeClient
from proxyd.k8s.reachability import Reachability
from proxyd.runner import Backoff

log = logging.getLogger(__name__)

Handler = Callable[[str, dict | None, dict | None], None]      # (kind name, old, new)
EventCounter = Callable[[str, str], None]                       # (kind name, event type)


class Gone(Exception):
    """The watch's resourceVersion was compacted away (410): re-list."""


class Informer:
    def __init__(self, client: KubeClient, kind: Kind, *,
                 indexers: Mapping[str, IndexFunc] | None = None,
                 watch_timeout: float = 300.0, read_margin: float = 30.0,
                 backoff: Backoff | None = None, rng: Callable[[], float] = random.random,
                 count_event: EventCounter = lambda kind, type_: None,
                 reachability: Reachability | None = None):
        self.kind = kind
        self.store = Store(indexers)
        self._client = client
        self._handlers: list[Handler] = []
        self._watch_timeout, self._read_margin, self._rng = watch_timeout, read_margin, rng
        self._backoff = backoff or Backoff(0.5, 30.0, rng=rng)
        self._count = count_event
        self._reach = reachability
        self._returns_seen = 0  # reachability.returns when the last request was made
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = None
        self.lists = 0          # how many times the collection was listed (tests, metrics)
        # The newest resourceVersion whose change is in the store (list, event or bookmark).
        self.resource_version = ""

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._reach is not None:
            self._reach.interrupt()
        stream = self._stream
        if stream is not None:
            stream.abort()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 0.0
        while not self._pause(delay):
            try:
                rv = self._list()
                self._backoff.reset()
                if self._reach is not None:
                    self._reach.answered()
                while not self._stop.is_set():
                    rv = self._watch(rv)
                delay = 0.0
            except Gone:
                log.info("%s: resourceVersion expired, listing again", self.kind.name)
                delay = 0.0
            except Exception as e:  # lists and watches fail in many ways; all mean re-list
                if self._stop.is_set():
                    break
                delay = self._backoff.next()
                if self._reach is not None:
                    self._reach.failed(e)
                log.warning("%s: list/watch failed (%s); listing again in %.2fs",
                            self.kind.name, e, delay)

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` or until the API server is back from an outage; True once stopped."""
        if self._reach is None or delay <= 0:
            return self._stop.wait(delay)
        if self._reach.wait_for_return(self._returns_seen, delay, self._stop.is_set):
            if not self._stop.is_set():
                log.info("%s: the API server is back; listing now", self.kind.name)
        return self._stop.is_set()

    def _mark_request(self) -> None:
        # A return from an outage while this request is under way still cuts the backoff
        # that follows its failure short.
        if self._reach is not None:
            self._returns_seen = self._reach.returns

    def _list(self) -> str:
        self._mark_request()
        items, rv = self._client.list(self.kind)
        self.lists += 1
        for old, new in self.store.replace(items):
            self._emit("DELETED" if new is None else "ADDED" if old is None else "MODIFIED", old, new)
        self.resource_version = rv
        self._synced.set()
        return rv

    def _watch(self, rv: str) -> str:
        # Jitter spreads the re-watches of many nodes (client-go: timeout * [1, 2)).
        timeout = int(self._watch_timeout * (1 + self._rng()))
        self._mark_request()
        self._stream = self._client.watch(self.kind, rv, timeout,
                                          read_timeout=timeout + self._read_margin)
        try:
            if self._stop.is_set():  # stop() ran between the check and the request
                self._stream.abort()
                return rv
            for event in self._stream:
                if self._stop.is_set():
                    break
                rv = self._handle(event, rv)
        finally:
            self._stream = None
        return rv

    def _handle(self, event: dict, rv: str) -> str:
        type_, obj = event.get("type"), event.get("object") or {}
        self._count(self.kind.name, str(type_))
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", ""))
            raise ApiError(obj.get("code", 0), obj.get("message", "watch error"))
        new_rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
        if type_ != "BOOKMARK":
            change = self.store.apply(obj, deleted=type_ == "DELETED")
            if change is not None:
                self._emit(type_, *change)
        self.resource_version = new_rv
        return new_rv

    def _emit(self, type_: str, old: dict | None, new: dict | None) -> None:
        for handler in self._handlers:
            try:
                handler(self.kind.name, old, new)
            except Exception:  # a handler only records; its bug must not stop the informer
                log.exception("%s %s %s: handler failed", self.kind.name, type_,
                              object_key(new if new is not None else old))
