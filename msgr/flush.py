"""Delivery you can wait for: ``Connection.flush`` and ``shutdown(linger=...)``.

A flush covers the messages queued on a connection before the call. It is
complete when they were written to the socket (lossy policy) or acknowledged
by the peer (lossless policy, where a reconnect in between is waited through:
the SEQ exchange tells which ones the peer already has). It fails (False) when
the session ends or is reset first; the messages then reach
``Dispatcher.ms_handle_discarded`` as usual.

The bookkeeping of what is written or acked is sans-IO
(:class:`msgr.protocol.outq.FlushMarks`); this module does the waiting. Every
flush is a ``concurrent.futures.Future[bool]`` resolved on the connection's
worker, so blocking (``flush``), asyncio (``msgr.aio.flush``) and callbacks
share one path, and a cancelled or timed-out wait leaves nothing behind.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from msgr.errors import WouldDeadlockError
from msgr.protocol.outq import FlushMarks

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection

_log = logging.getLogger("msgr.flush")

# the threads the library starts (eventcenter.worker.Worker, msgr.dispatch_queue.DispatchQueue)
_LIBRARY_THREAD_PREFIXES = ("msgr-worker-", "ms_dispatch-")


def refuse_blocking_call(what: str) -> None:
    """Raise :class:`WouldDeadlockError` if the calling thread is a worker or a dispatch thread.

    A blocking wait there would stop the very loop (or dispatch, and through the dispatch throttle
    the reading of acks) that has to finish the work waited for.
    """
    name = threading.current_thread().name
    if name.startswith(_LIBRARY_THREAD_PREFIXES):
        raise WouldDeadlockError(
            f"{what} waits for the messenger's threads, so it cannot be called on one of them "
            f"(this is {name!r}; Dispatcher callbacks run there). Call it from another thread, or "
            f"use flush_future() / msgr.aio, which do not block")


def resolve(fut: Future[Any], value: bool) -> None:
    """Complete ``fut`` with ``value`` unless it is already done (e.g. cancelled by its waiter)."""
    try:
        fut.set_result(value)
    except InvalidStateError:
        pass


def wait_flushed(fut: Future[bool], timeout: float | None) -> bool:
    """Block on a flush future up to ``timeout`` seconds; on timeout cancel it and return False."""
    try:
        return fut.result(timeout)
    except TimeoutError:
        if fut.cancel():
            return False
        return bool(fut.result())   # it completed in the meantime
    except CancelledError:
        return False


class FlushingConnection:
    """The flush side of :class:`msgr.connection.AsyncConnection` (a mixin over its worker state).

    All marks live on the connection's worker: registration is posted there (after the messages
    queued from other threads are handed to the protocol, so they are covered), progress is checked
    after every protocol call and write, and a discard or the end of the session fails what is left.
    """

    _flushes: FlushMarks | None = None

    def flush_future(self) -> Future[bool]:
        """A future of :meth:`Connection.flush`: True once every message queued on this connection
        before the call was written (lossy) or acknowledged (lossless), False if the session ends or
        is reset first. Never blocks; any thread. It resolves on the connection's worker thread, so a
        callback added to it must be short; cancelling it withdraws the flush."""
        fut: Future[bool] = Future()
        me: Any = self
        if me._down or me._closed:
            resolve(fut, False)
            return fut
        fut.add_done_callback(self._flush_done)
        # posted even on the worker: a callback there may run inside a read, where writing the
        # messages queued from other threads (which the flush covers) must wait for the read's end
        try:
            me._center.dispatch_event_external(lambda: self._register_flush(fut))
        except Exception as exc:   # the worker is gone: the session cannot make progress
            _log.debug("%r: flush cannot reach the worker: %s", self, exc)
            resolve(fut, False)
        return fut

    def _register_flush(self, fut: Future[Any]) -> None:
        me: Any = self
        if fut.done():
            return
        me._flush_pending()   # messages queued from other threads before the flush go first
        if me._closed or me._down:
            resolve(fut, False)
            return
        if self._flushes is None:
            self._flushes = FlushMarks()
        self._flushes.add(fut)
        self._check_flushes()

    def _check_flushes(self) -> None:
        """On the worker: complete the flushes whose messages are written / acked now."""
        marks = self._flushes
        if not marks:
            return
        me: Any = self
        proto = me._proto
        wbufs = me._wbufs
        unwritten = sum(map(len, wbufs)) if wbufs else 0
        for fut in marks.progress(proto.outq, proto.policy.lossy, proto.stats["bytes_out"], unwritten):
            resolve(fut, True)

    def _fail_flushes(self) -> None:
        """On the worker: the messages waited for were discarded (session closed or reset)."""
        marks = self._flushes
        if marks:
            for fut in marks.fail_all():
                resolve(fut, False)

    def _flush_done(self, fut: Future[Any]) -> None:
        if not fut.cancelled():
            return
        me: Any = self

        def forget() -> None:
            if self._flushes:
                self._flushes.remove(fut)
        if me._center.in_thread():
            forget()
        else:
            try:
                me._center.dispatch_event_external(forget)
            except Exception:   # the worker is gone, and the marks with it
                pass


def linger(conns: Iterable[Connection], seconds: float, who: object = "") -> bool:
    """Flush every connection in ``conns`` at once and wait up to ``seconds`` in total.

    Returns True if all completed; otherwise logs at INFO how many connections did not.
    """
    refuse_blocking_call("shutdown(linger=...)")
    deadline = time.monotonic() + seconds
    futs = [(c, c.flush_future()) for c in conns]
    late = []
    for conn, fut in futs:
        if not wait_flushed(fut, max(0.0, deadline - time.monotonic())):
            late.append(conn)
    if late:
        _log.info("%s: shutdown(linger=%g): %d of %d connection(s) not flushed (time out or session "
                  "ended): %s",
                  who, seconds, len(late), len(futs), ", ".join(repr(c) for c in late[:5]))
    return not late
