"""A finding in a configuration: where (a JSON path) and what to do about it."""
from __future__ import annotations

import dataclasses
from typing import Iterable


def json_path(parts: Iterable[str | int]) -> str:
    """``["plugins", 0, "ipam", "ranges", 1, 0]`` -> ``plugins[0].ipam.ranges[1][0]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
