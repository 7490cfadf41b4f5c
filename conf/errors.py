"""The one exception kube-router-cni turns into a one-line message and an exit code."""
from __future__ import annotations

EXIT_INVALID = 1
EXIT_UNUSABLE = 2


class ConfError(Exception):
    """A problem the operator can act on; ``str()`` is the whole message."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID):
        super().__init__(message)
        self.exit_code = exit_code
