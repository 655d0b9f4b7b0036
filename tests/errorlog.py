"""Catch ERROR lines of the messenger's loggers from any thread (used by tests/conftest.py).

A handler on the watched loggers sees every record their children propagate, whichever thread
logs it (workers, the dispatch thread), which caplog alone does not promise across threads.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

#: Loggers whose ERROR lines fail a test (children included: records propagate to these).
WATCHED_LOGGERS = ("msgr", "eventcenter")


class ErrorLines(logging.Handler):
    """Collects ERROR+ records of ``WATCHED_LOGGERS`` between ``start()`` and ``stop()``."""

    def __init__(self, names: Iterable[str] = WATCHED_LOGGERS) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._loggers = [logging.getLogger(n) for n in names]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)   # list.append is atomic: workers may log concurrently

    def start(self) -> None:
        for lg in self._loggers:
            lg.addHandler(self)

    def stop(self) -> None:
        for lg in self._loggers:
            lg.removeHandler(self)

    def unexpected(self, allowed: Iterable[str] = ()) -> list[logging.LogRecord]:
        """The records whose message matches none of the ``allowed`` regex patterns."""
        pats = [re.compile(p) for p in allowed]
        return [r for r in self.records if not any(p.search(r.getMessage()) for p in pats)]


def describe(records: list[logging.LogRecord], limit: int = 10) -> str:
    lines = []
    for r in records[:limit]:
        exc = f" ({r.exc_info[0].__name__}: {r.exc_info[1]})" if r.exc_info and r.exc_info[0] else ""
        lines.append(f"  {r.levelname} {r.name} [{r.threadName}]: {r.getMessage()}{exc}")
    return "\n".join(lines)
