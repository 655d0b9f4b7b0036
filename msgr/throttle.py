"""Byte and message throttles with a non-blocking ``try_get`` for workers.

The receive path never blocks a worker: when a throttle is full the
connection stops reading and retries from a timer, as Ceph's
AsyncConnection does. ``get`` (blocking) exists for application threads.
"""
from __future__ import annotations

import threading


class Throttle:
    """A counter of units in use, bounded by ``max`` (0 = unlimited)."""

    def __init__(self, name: str, max: int = 0) -> None:
        self.name = name
        self._max = max
        self._current = 0
        self._cond = threading.Condition(threading.Lock())
        self.waits = 0  # how often try_get said no (a perf counter)

    @property
    def max(self) -> int:
        return self._max

    @property
    def current(self) -> int:
        return self._current

    def reset_max(self, max: int) -> None:
        with self._cond:
            self._max = max
            self._cond.notify_all()

    def _fits(self, count: int) -> bool:
        # Like Ceph, a single request larger than max passes when nothing else is held,
        # otherwise it could never be admitted.
        return self._max == 0 or self._current + count <= self._max or self._current == 0

    def try_get(self, count: int = 1) -> bool:
        with self._cond:
            if self._fits(count):
                self._current += count
                return True
            self.waits += 1
            return False

    def get(self, count: int = 1, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(count), timeout):
                return False
            self._current += count
            return True

    def put(self, count: int = 1) -> None:
        if count <= 0:
            return
        with self._cond:
            self._current = max(0, self._current - count)
            self._cond.notify_all()

    def __repr__(self) -> str:
        return f"Throttle({self.name!r}, {self._current}/{self._max})"
