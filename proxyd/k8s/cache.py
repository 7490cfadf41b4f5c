"""A thread-safe store of one kind's objects, with secondary indexes.

Objects are the API's JSON as dicts and are never mutated once stored, so a
snapshot is a shallow copy: readers never see a half-applied change.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping

from lowlevel.apiobjects import service_of_slice

IndexFunc = Callable[[dict], Iterable[str]]


def object_key(obj: Mapping) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


def resource_version(obj: Mapping | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def pods_by_node(pod: Mapping) -> Iterable[str]:
    node = (pod.get("spec") or {}).get("nodeName")
    return (node,) if node else ()


def by_namespace(obj: Mapping) -> Iterable[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return (ns,) if ns else ()


def slices_by_service(eps: Mapping) -> Iterable[str]:
    service = service_of_slice(eps)
    return (service,) if service else ()


# (old, new) pairs a store change produced; old None = added, new None = deleted.
StoreChange = tuple[dict | None, dict | None]


class Store:
    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None):
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def replace(self, objects: Iterable[dict]) -> list[StoreChange]:
        """Make the store equal a fresh list; return only real changes.

        A key missing from the list was deleted while we were not watching:
        it comes back as a deletion so nothing downstream keeps a ghost.
        """
        fresh = {object_key(o): o for o in objects}
        changes: list[StoreChange] = []
        with self._lock:
            for key in sorted(self._items.keys() - fresh.keys()):
                changes.append((self._put(key, None), None))
            for key, obj in fresh.items():
                old = self._items.get(key)
                if old is None or resource_version(old) != resource_version(obj):
                    self._put(key, obj)
                    changes.append((old, obj))
        return changes

    def apply(self, obj: dict, deleted: bool = False) -> StoreChange | None:
        """One watch event; None when it changes nothing (same resourceVersion, unknown delete)."""
        key = object_key(obj)
        with self._lock:
            old = self._items.get(key)
            if deleted:
                return None if old is None else (self._put(key, None), None)
            if old is not None and resource_version(old) == resource_version(obj):
                return None
            self._put(key, obj)
            return old, obj

    def _put(self, key: str, obj: dict | None) -> dict | None:
        old = self._items.pop(key, None)
        for name, func in self._indexers.items():
            index = self._indexes[name]
            for value in func(old) if old is not None else ():
                index.get(value, set()).discard(key)
                if not index.get(value, True):
                    del index[value]
            for value in func(obj) if obj is not None else ():
                index.setdefault(value, set()).add(key)
        if obj is not None:
            self._items[key] = obj
        return old

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._items.get(key)

    def list(self) -> list[dict]:
        with self._lock:
            return [self._items[k] for k in sorted(self._items)]

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return dict(self._items)

    def by_index(self, index: str, value: str) -> list[dict]:
        with self._lock:
            keys = sorted(self._indexes[index].get(value, ()))
            return [self._items[k] for k in keys]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
