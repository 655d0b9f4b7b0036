"""Clocks: the only place in pymsgr that reads the OS clock.

Everything that needs "now" takes a :class:`Clock` and calls ``now_us()``;
tests pass a :class:`FakeClock` and move time by hand, so timer logic runs
without sleeping.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = ["Clock", "MonotonicClock", "FakeClock"]


class Clock(ABC):
    """A source of monotonic time in integer microseconds."""

    @abstractmethod
    def now_us(self) -> int:
        """Current time in microseconds; never goes backwards."""


class MonotonicClock(Clock):
    """The OS monotonic clock (CLOCK_MONOTONIC on Linux).

    It is the clock epoll_wait's timeout runs on, so a poll that times out
    after ``d`` µs always finds ``now_us()`` advanced by at least ``d``.
    """

    __slots__ = ()

    def now_us(self, _ns: Callable[[], int] = time.monotonic_ns) -> int:  # default arg: a local lookup on the hot path
        return _ns() // 1000


class FakeClock(Clock):
    """A clock that moves only when told to (for deterministic tests)."""

    __slots__ = ("_now_us",)

    def __init__(self, start_us: int = 0) -> None:
        if start_us < 0:
            raise ValueError(f"start_us must be >= 0, got {start_us}")
        self._now_us = int(start_us)

    def now_us(self) -> int:
        return self._now_us

    def advance(self, us: int) -> None:
        """Move time forward by ``us`` microseconds; negative is a ValueError."""
        if us < 0:
            raise ValueError(f"a clock cannot go backwards (advance({us}))")
        self._now_us += int(us)

    def __repr__(self) -> str:
        return f"FakeClock(now_us={self._now_us})"
