"""A queued call whose submitter blocks until the loop has run it (``submit_to(wait=True)``)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WaitedCall"]


class WaitedCall:
    """An external event whose caller blocks until it has run (``submit_to(wait=True)``)."""

    __slots__ = ("fn", "result", "exc", "_done")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.exc: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def __call__(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the waiter, who re-raises it
            self.exc = exc
        finally:
            self._done.release()

    def fail(self, exc: BaseException) -> None:
        self.exc = exc
        self._done.release()

    def wait(self) -> Any:
        self._done.acquire()
        exc, self.exc = self.exc, None  # break the exc -> traceback -> frame -> self cycle
        if exc is not None:
            raise exc
        return self.result
