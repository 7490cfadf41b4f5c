"""The objects a controller skips, logged once per change of the list.

A Service or a policy the build cannot program is left out and the rest is
served; a sync that meets the same bad object every time says so only when
the list of problems changes, naming each object.
"""
from __future__ import annotations

import logging
from typing import Sequence


class ProblemLog:
    def __init__(self, logger: logging.Logger, what: str):
        self._log, self._what = logger, what
        self.current: list[str] = []

    def report(self, problems: Sequence[str]) -> None:
        problems = list(problems)
        if problems != self.current:
            for problem in problems:
                self._log.error("%s: %s", self._what, problem)
            self.current = problems
