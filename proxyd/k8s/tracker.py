"""Per-controller change tracking: for each object key, what it was and what it is.

Handlers only record here; the controller's runner drains the tracker when it
syncs. Many events for one key collapse into one change; an object that came
and went again between two syncs (or changed and changed back) is no change.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable

from proxyd.k8s.cache import object_key, resource_version


@dataclasses.dataclass(frozen=True)
class Change:
    kind: str
    key: str
    previous: dict | None   # as of the last successful sync; None = did not exist
    current: dict | None    # now; None = deleted

    @property
    def is_noop(self) -> bool:
        return resource_version(self.previous) == resource_version(self.current)


class ChangeTracker:
    def __init__(self, wake: Callable[[], None] = lambda: None):
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Change] = {}
        self._wake = wake

    def record(self, kind: str, old: dict | None, new: dict | None) -> None:
        key = object_key(new if new is not None else old)
        with self._lock:
            self._merge(Change(kind, key, old, new))
        self._wake()

    def _merge(self, change: Change) -> None:
        slot = (change.kind, change.key)
        earlier = self._pending.pop(slot, None)
        if earlier is not None:
            change = dataclasses.replace(change, previous=earlier.previous)
        if not change.is_noop:
            self._pending[slot] = change

    def take(self) -> list[Change]:
        """Every pending change, sorted by kind and key; the tracker is empty afterwards."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return [taken[slot] for slot in sorted(taken)]

    def give_back(self, changes: list[Change]) -> None:
        """A sync failed: its changes are pending again, under anything newer."""
        with self._lock:
            for change in changes:
                newer = self._pending.pop((change.kind, change.key), None)
                merged = change if newer is None else dataclasses.replace(newer, previous=change.previous)
                if not merged.is_noop:
                    self._pending[(change.kind, change.key)] = merged

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
