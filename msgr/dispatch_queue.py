"""DispatchQueue: one thread that hands messages and connection events to the dispatchers.

Items are served by priority, higher first, FIFO within a priority.
Connection events (Ceph's ``D_CONNECT`` ... ``D_CONN_REFUSED`` codes) go in
at the highest priority, as in Ceph, so a dispatcher hears of a connection
before its first message. After a message is dispatched its receive-side
throttles (message, byte, dispatch) are released, which lets the connection
that was blocked on them read again.
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgr import debug
from msgr.dispatcher import DispatcherChain
from msgr.protocol.actions import ConnEvent

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message
    from msgr.perf import MessengerPerf

_log = logging.getLogger("msgr.dispatch")
_dbg = debug.gate

# Ceph's DispatchQueue item codes
D_CONNECT = 1
D_ACCEPT = 2
D_BAD_REMOTE_RESET = 3
D_BAD_RESET = 4
D_CONN_REFUSED = 5
_D_MESSAGE = 0
_D_LOCAL = 6       # pymsgr: a message to ourselves (may be fast-dispatched here)
_D_DISCARDED = 7   # pymsgr: messages a session reset dropped unsent
_D_BARRIER = 8     # pymsgr: a flush of the loopback connection (see barrier)

CODE_OF_EVENT = {
    ConnEvent.CONNECT: D_CONNECT,
    ConnEvent.ACCEPT: D_ACCEPT,
    ConnEvent.BAD_REMOTE_RESET: D_BAD_REMOTE_RESET,
    ConnEvent.BAD_RESET: D_BAD_RESET,
    ConnEvent.CONN_REFUSED: D_CONN_REFUSED,
}

PRIO_HIGHEST = 255  # CEPH_MSG_PRIO_HIGHEST: connection events

# (code, message or discarded messages or None, connection)
_Item = tuple[int, Any, Any]


class DispatchQueue:
    """A priority queue drained by its own thread into a :class:`DispatcherChain`."""

    def __init__(self, chain: DispatcherChain, name: str = "", perf: MessengerPerf | None = None) -> None:
        self.chain = chain
        self.name = name
        self._perf = perf
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[int, collections.deque[_Item]] = {}
        self._length = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.dispatched = 0  # items handled (messages and events)

    # --- life ----------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
        self._thread = threading.Thread(target=self._entry, name=f"ms_dispatch-{self.name}", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Ask the thread to stop; items still queued are discarded (their throttles released)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():
                return False
        self._thread = None
        self.discard_queue()
        return True

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop

    def in_thread(self) -> bool:
        return self._thread is threading.current_thread()

    # --- producers (any thread) ---------------------------------------------
    def enqueue(self, msg: Message, priority: int | None = None) -> None:
        """Queue a received message for ``ms_dispatch``."""
        self._put(msg.header.priority if priority is None else priority, (_D_MESSAGE, msg, None))

    def local_delivery(self, msg: Message, priority: int | None = None) -> None:
        """Queue a message we sent to ourselves (fast dispatch is honoured on this thread)."""
        if _dbg.messages:
            debug.trace_sent(msg.get_connection(), msg)
        self._put(msg.header.priority if priority is None else priority, (_D_LOCAL, msg, None))

    def queue_event(self, code: int, conn: Any) -> None:
        """Queue a connection event (``D_CONNECT`` ... ``D_CONN_REFUSED``)."""
        self._put(PRIO_HIGHEST, (code, None, conn))

    def queue_discarded(self, conn: Any, messages: tuple[Message, ...]) -> None:
        self._put(PRIO_HIGHEST, (_D_DISCARDED, messages, conn))

    def barrier(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once every item queued now has been dispatched, or
        ``callback(False)`` if the queue stops first (the callback runs on the dispatch thread,
        or at once in the caller when nothing is queued or the queue is stopped).

        One marker goes at the tail of each non-empty priority (FIFO within a priority), so later,
        higher-priority items cannot hold it back indefinitely.
        """
        with self._cond:
            stopped = self._stop or self._thread is None
            prios = [] if stopped else [p for p, q in self._queues.items() if q]
            if prios:
                state = [len(prios), callback]
                for p in prios:
                    self._queues[p].append((_D_BARRIER, state, None))
                self._length += len(prios)
                return
        callback(not stopped)

    @staticmethod
    def _barrier_reached(state: list[Any], ok: bool) -> None:
        if state[1] is None:
            return
        state[0] -= 1
        if state[0] <= 0 or not ok:
            cb, state[1] = state[1], None
            cb(ok)

    def _put(self, prio: int, item: _Item) -> None:
        with self._cond:
            if self._stop:
                # after shutdown nothing is dispatched; give the throttles back at once
                if item[0] in (_D_MESSAGE, _D_LOCAL):
                    item[1].release_throttles()
                return
            q = self._queues.get(prio)
            if q is None:
                q = self._queues[prio] = collections.deque()
            q.append(item)
            self._length += 1
            if self._length == 1:
                self._cond.notify()

    def __len__(self) -> int:
        return self._length

    # --- the thread -------------------------------------------------------------
    def _take(self) -> _Item | None:
        with self._cond:
            while not self._length:
                if self._stop:
                    return None
                self._cond.wait()
            if self._stop:
                return None
            queues = self._queues
            prio = max(p for p, q in queues.items() if q)
            self._length -= 1
            return queues[prio].popleft()

    def _entry(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            try:
                self._dispatch(item)
            except Exception:
                # a dispatcher bug must not stop dispatching for everyone
                _log.exception("DispatchQueue %s: dispatcher raised on %r", self.name, item)
            finally:
                if item[0] in (_D_MESSAGE, _D_LOCAL):
                    item[1].release_throttles()
            if item[0] != _D_BARRIER:
                self.dispatched += 1

    def _dispatch(self, item: _Item) -> None:
        code, msg, conn = item
        chain = self.chain
        if code == _D_MESSAGE:
            if self._perf is not None:
                self._perf.here().msgr_queued_dispatched += 1
            if not chain.deliver(msg):
                _log.debug("DispatchQueue %s: unhandled message %r", self.name, msg)
        elif code == _D_LOCAL:
            if _dbg.messages:
                debug.trace_received(msg.get_connection(), msg)
            chain.fast_preprocess(msg)
            d = chain.fast_dispatcher_for(msg)
            if d is not None:
                d.ms_fast_dispatch(msg)
            elif not chain.deliver(msg):
                _log.debug("DispatchQueue %s: unhandled local message %r", self.name, msg)
        elif code == D_CONNECT:
            chain.handle_connect(conn)
        elif code == D_ACCEPT:
            chain.handle_accept(conn)
        elif code == D_BAD_REMOTE_RESET:
            chain.handle_remote_reset(conn)
        elif code == D_BAD_RESET:
            chain.handle_reset(conn)
        elif code == D_CONN_REFUSED:
            chain.handle_refused(conn)
        elif code == _D_DISCARDED:
            chain.handle_discarded(conn, msg)
        elif code == _D_BARRIER:
            self._barrier_reached(msg, True)
        else:  # pragma: no cover - internal invariant
            raise AssertionError(f"unknown dispatch code {code}")

    def discard_queue(self) -> int:
        """Drop everything queued (releasing message throttles); returns how many items."""
        with self._cond:
            queues, self._queues = self._queues, {}
            self._length = 0
        n = 0
        for q in queues.values():
            for code, msg, _conn in q:
                if code in (_D_MESSAGE, _D_LOCAL):
                    msg.release_throttles()
                elif code == _D_BARRIER:
                    self._barrier_reached(msg, False)
                    continue
                n += 1
        return n
