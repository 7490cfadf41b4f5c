"""Objects, the global resourceVersion, a bounded event history and waiting watchers.

Stored objects are never mutated: every write stores a new dict, so readers
may serialise what they get without copying it.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

from krsim.apiserver.errors import expired


@dataclass(frozen=True)
class Event:
    rv: int
    plural: str
    type: str                 # ADDED, MODIFIED, DELETED
    obj: dict
    old: dict | None          # the previous version, for selector transitions


Key = tuple[str, str]         # (namespace or "", name)


class Store:
    def __init__(self, history: int = 1000):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0
        self._objects: dict[str, dict[Key, dict]] = collections.defaultdict(dict)
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        # Every resourceVersion up to this one has left the history.
        self._compacted = 0
        self.closed = False
        # The resourceVersion of the newest write per resource: what a watcher
        # must have seen to be up to date with that resource.
        self.last_write: dict[str, int] = {}

    def next_rv(self) -> int:
        with self.lock:
            self.rv += 1
            return self.rv

    def get(self, plural: str, key: Key) -> dict | None:
        with self.lock:
            return self._objects[plural].get(key)

    def items(self, plural: str, namespace: str | None = None) -> tuple[list[dict], int]:
        with self.lock:
            objs = self._objects[plural]
            if namespace is None:
                found = list(objs.values())
            else:
                found = [o for (ns, _), o in objs.items() if ns == namespace]
            return found, self.rv

    def put(self, plural: str, key: Key, obj: dict, rv: int) -> None:
        """Store ``obj`` (its metadata.resourceVersion already set to ``rv``)."""
        with self.lock:
            old = self._objects[plural].get(key)
            self._objects[plural][key] = obj
            self._record(Event(rv, plural, "MODIFIED" if old else "ADDED", obj, old))

    def remove(self, plural: str, key: Key, final: dict, rv: int) -> None:
        with self.lock:
            old = self._objects[plural].pop(key)
            self._record(Event(rv, plural, "DELETED", final, old))

    def _record(self, event: Event) -> None:
        self.last_write[event.plural] = event.rv
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(event)
        self.changed.notify_all()

    def events_after(self, plural: str, rv: int) -> tuple[list[Event], int]:
        """Events for ``plural`` newer than ``rv`` and the current resourceVersion.

        410 Expired when the history no longer reaches back to ``rv``.
        """
        with self.lock:
            if rv < self._compacted:
                raise expired(rv, self._compacted + 1)
            newer = []
            for event in reversed(self._history):
                if event.rv <= rv:
                    break
                if event.plural == plural:
                    newer.append(event)
            newer.reverse()
            return newer, self.rv

    def wait_beyond(self, rv: int, timeout: float) -> None:
        with self.lock:
            if self.rv <= rv and not self.closed:
                self.changed.wait(timeout)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.changed.notify_all()

    def reopen(self) -> None:
        with self.lock:
            self.closed = False
