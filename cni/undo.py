"""Roll back a half-done ADD: steps recorded as they are done, undone newest first.

What contextlib.ExitStack would do with callbacks, without importing contextlib
(and the collections and functools it pulls in) on every plugin exec.
"""
from __future__ import annotations


class UndoStack:
    """``with UndoStack() as undo``: ``undo.callback(fn, *args)`` after each step;
    ``undo.commit()`` once everything worked. Leaving the block with steps still
    recorded (an error) runs them in reverse."""

    __slots__ = ("_steps",)

    def __init__(self):
        self._steps: list = []

    def callback(self, fn, *args) -> None:
        self._steps.append((fn, args))

    def commit(self) -> None:
        self._steps.clear()

    def __enter__(self) -> UndoStack:
        return self

    def __exit__(self, *exc_info) -> bool:
        while self._steps:
            fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception:      # the error on its way out is the one to report
                pass
        return False
