"""Byte and message throttles with a non-blocking ``try_get`` for workers.

The receive path never blocks a worker: when a throttle is full the
connection stops reading and retries from a timer, as Ceph's
AsyncConnection does. ``get`` (blocking) exists for application threads.

Cost: ``try_get``/``put`` run per received message, so they take a bare
``Lock`` (acquire/release in try/finally: a ``with`` statement costs about twice
that on CPython 3.11) and wake sleepers only when a blocking ``get`` is actually
waiting; the Condition is used by ``get`` alone.
"""
from __future__ import annotations

import threading


class Throttle:
    """A counter of units in use, bounded by ``max`` (0 = unlimited)."""

    __slots__ = ("name", "_max", "_current", "_lock", "_cond", "_sleepers", "waits")

    def __init__(self, name: str, max: int = 0) -> None:
        self.name = name
        self._max = max
        self._current = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sleepers = 0   # threads inside get(); put() notifies only when there are some
        self.waits = 0       # how often try_get said no (a perf counter)

    @property
    def max(self) -> int:
        """The bound (0 = unlimited)."""
        return self._max

    @property
    def current(self) -> int:
        """Units in use now."""
        return self._current

    def reset_max(self, max: int) -> None:
        """Change the bound (0 = unlimited); waiters look again."""
        with self._lock:
            self._max = max
            if self._sleepers:
                self._cond.notify_all()

    def _fits(self, count: int) -> bool:
        # Like Ceph, a single request larger than max passes when nothing else is held,
        # otherwise it could never be admitted.
        return self._max == 0 or self._current + count <= self._max or self._current == 0

    def try_get(self, count: int = 1) -> bool:
        """Take ``count`` units if they fit (a single oversized take fits an idle throttle); never waits."""
        lock = self._lock
        lock.acquire()   # the pair, not `with`: half the cost of the context-manager protocol
        try:
            cur, mx = self._current, self._max
            if mx == 0 or cur + count <= mx or cur == 0:
                self._current = cur + count
                return True
            self.waits += 1
            return False
        finally:
            lock.release()

    def get(self, count: int = 1, timeout: float | None = None) -> bool:
        """Take ``count`` units, waiting up to ``timeout`` seconds (None = no limit) for them to fit."""
        with self._lock:
            self._sleepers += 1
            try:
                if not self._cond.wait_for(lambda: self._fits(count), timeout):
                    return False
            finally:
                self._sleepers -= 1
            self._current += count
            return True

    def put(self, count: int = 1) -> None:
        """Give ``count`` units back and wake the waiters of :meth:`get`."""
        if count <= 0:
            return
        lock = self._lock
        lock.acquire()
        try:
            cur = self._current - count
            self._current = cur if cur > 0 else 0
            if self._sleepers:
                self._cond.notify_all()
        finally:
            lock.release()

    def __repr__(self) -> str:
        return f"Throttle({self.name!r}, {self._current}/{self._max})"
