"""Watch streams: initial state, events after a resourceVersion, bookmarks, 410 Expired."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from krsim.apiserver.errors import ApiError
from krsim.apiserver.kinds import Resource
from krsim.apiserver.registry import Registry
from krsim.apiserver.selectors import (fields_match, labels_match, parse_field_selector,
                                        parse_label_selector)
from krsim.apiserver.store import Event

# The real server's --min-request-timeout: a watch without timeoutSeconds ends after 30-60 min.
DEFAULT_TIMEOUT = 1800.0


@dataclass
class WatchRequest:
    res: Resource
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    resource_version: str | None
    bookmarks: bool
    timeout: float


def stream_watch(registry: Registry, req: WatchRequest, send: Callable[[dict], None],
                 bookmark_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Send events until the timeout, server shutdown or a failed write (``send`` raises)."""
    store = registry.store
    labels = parse_label_selector(req.label_selector)
    fields = parse_field_selector(req.field_selector, req.res.plural)

    def wanted(obj: dict | None) -> bool:
        if obj is None:
            return False
        if req.namespace is not None and obj["metadata"].get("namespace") != req.namespace:
            return False
        return labels_match(labels, obj) and fields_match(fields, obj)

    with store.lock:
        if req.resource_version in (None, "", "0"):
            # "Get state and start at most recent": synthetic ADDED for what exists now.
            items, cursor = registry.list(req.res, req.namespace, req.label_selector,
                                          req.field_selector)
            first = [{"type": "ADDED", "object": item} for item in items]
        else:
            cursor = _parse_rv(req.resource_version)
            first = []
    for event in first:
        send(event)
    deadline = clock() + req.timeout
    next_bookmark = clock() + bookmark_interval
    while not store.closed:
        try:
            events, current = store.events_after(req.res.plural, cursor)
        except ApiError as gone:
            send({"type": "ERROR", "object": gone.status()})
            return
        for event in events:
            translated = _translate(event, wanted)
            if translated:
                send(translated)
        cursor = current
        now = clock()
        if req.bookmarks and now >= next_bookmark:
            send({"type": "BOOKMARK", "object": {
                "kind": req.res.kind, "apiVersion": req.res.api_version,
                "metadata": {"resourceVersion": str(cursor)}}})
            next_bookmark = now + bookmark_interval
        if now >= deadline:
            return
        wake = min(deadline, next_bookmark) if req.bookmarks else deadline
        store.wait_beyond(cursor, max(0.0, wake - now))


def _translate(event: Event, wanted: Callable[[dict | None], bool]) -> dict | None:
    """Selector transitions: leaving the selection is DELETED, entering it is ADDED."""
    now, before = wanted(event.obj), wanted(event.old)
    if event.type == "DELETED":
        return {"type": "DELETED", "object": event.obj} if before or now else None
    if now and before:
        return {"type": "MODIFIED", "object": event.obj}
    if now:
        return {"type": "ADDED", "object": event.obj}
    if before:
        return {"type": "DELETED", "object": event.obj}
    return None


def _parse_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid resource version: "{text}"') from None
