"""DispatchQueue: one thread that hands messages and connection events to the dispatchers.

Items are served by priority, higher first, FIFO within a priority.
Connection events (Ceph's ``D_CONNECT`` ... ``D_CONN_REFUSED`` codes) go in
at the highest priority, as in Ceph, so a dispatcher hears of a connection
before its first message; an event no dispatcher has a callback for is not
queued at all (:meth:`DispatcherChain.hears`), so the thread is not woken for
nothing. The thread takes a batch of items per wake-up
(highest priority first, at most ``BATCH_MAX``); after the batch the
receive-side throttles (message, byte, dispatch) of its messages are released,
one ``put`` per throttle, which lets a connection that was blocked on them read
again.
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
    from msgr.throttle import Throttle

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

CALLBACK_OF_CODE = {
    D_CONNECT: "ms_handle_connect",
    D_ACCEPT: "ms_handle_accept",
    D_BAD_REMOTE_RESET: "ms_handle_remote_reset",
    D_BAD_RESET: "ms_handle_reset",
    D_CONN_REFUSED: "ms_handle_refused",
    _D_DISCARDED: "ms_handle_discarded",
}

PRIO_HIGHEST = 255  # CEPH_MSG_PRIO_HIGHEST: connection events
BATCH_MAX = 128     # items per wake-up: a later higher-priority item waits at most this many

# (code, message or discarded messages or None, connection)
_Item = tuple[int, Any, Any]


class DispatchQueue:
    """A priority queue drained by its own thread into a :class:`DispatcherChain`.

    Hand-off costs (per message on the worker, per batch on this thread): producers append under
    one plain lock and wake the thread only when it is asleep (``_idle``; the wake is a lock the
    thread blocks on, released once per sleep); the thread takes up to ``BATCH_MAX`` items per
    wake-up under that lock, highest priority first, and gives the batch's receive throttles back
    once per throttle after the batch (or before a barrier, so a flush sees them released).
    """

    def __init__(self, chain: DispatcherChain, name: str = "", perf: MessengerPerf | None = None) -> None:
        self.chain = chain
        self.name = name
        self._perf = perf
        self._lock = threading.Lock()
        self._wake = threading.Lock()   # held while nobody must wake; released to wake the idle thread
        self._wake.acquire()
        self._idle = False              # the thread is (about to be) blocked on _wake
        self._busy = False              # the thread holds a batch it has not finished (under _lock)
        self._queues: dict[int, collections.deque[_Item]] = {}
        self._length = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.dispatched = 0  # items handled (messages and events)

    # --- life ----------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
        self._thread = threading.Thread(target=self._entry, name=f"ms_dispatch-{self.name}", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Ask the thread to stop; items still queued are discarded (their throttles released)."""
        with self._lock:
            self._stop = True
            self._wake_locked()

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

    def _wake_locked(self) -> None:
        """Under ``_lock``: release the thread if it sleeps (at most one release per sleep)."""
        if self._idle:
            self._idle = False
            self._wake.release()

    # --- producers (any thread) ---------------------------------------------
    def enqueue(self, msg: Message, priority: int | None = None) -> None:
        """Queue a received message for ``ms_dispatch``."""
        prio = msg.header.priority if priority is None else priority
        with self._lock:   # _put inlined: this runs once per message on the worker
            if self._stop:
                msg._release_throttles()   # after shutdown nothing is dispatched
                return
            q = self._queues.get(prio)
            if q is None:
                q = self._queues[prio] = collections.deque()
            q.append((_D_MESSAGE, msg, None))
            self._length += 1
            if self._idle:
                self._idle = False
                self._wake.release()

    def local_delivery(self, msg: Message, priority: int | None = None) -> None:
        """Queue a message we sent to ourselves (fast dispatch is honoured on this thread)."""
        if _dbg.messages:
            debug.trace_sent(msg.get_connection(), msg)
        self._put(msg.header.priority if priority is None else priority, (_D_LOCAL, msg, None))

    def queue_event(self, code: int, conn: Any, wake: bool = True) -> bool:
        """Queue a connection event (``D_CONNECT`` ... ``D_CONN_REFUSED``); False when no
        dispatcher has its callback (nothing queued: the thread has nothing to do for it).

        ``wake=False``: queued in order but the thread is not woken; the caller calls
        :meth:`wake` soon (a worker does at the end of the event it is handling, so the dispatch
        thread does not compete for the GIL with the write of the handshake reply)."""
        if not self.chain.hears(CALLBACK_OF_CODE[code]):
            return False
        self._put(PRIO_HIGHEST, (code, None, conn), wake)
        return True

    def wake(self) -> None:
        """Wake the thread if something is queued and it sleeps (after ``queue_event(wake=False)``)."""
        with self._lock:
            if self._length:
                self._wake_locked()

    def queue_discarded(self, conn: Any, messages: tuple[Message, ...]) -> None:
        """Queue messages dropped unsent for ``ms_handle_discarded`` (if a dispatcher has it)."""
        if self.chain.hears("ms_handle_discarded"):
            self._put(PRIO_HIGHEST, (_D_DISCARDED, messages, conn))

    def barrier(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once every item queued now has been dispatched, or
        ``callback(False)`` if the queue stops first (the callback runs on the dispatch thread,
        or at once in the caller when nothing is queued or the queue is stopped).

        One marker goes at the tail of each non-empty priority (FIFO within a priority), so later,
        higher-priority items cannot hold it back indefinitely. Items the thread has already
        taken (its current batch) come before any marker queued now.
        """
        with self._lock:
            stopped = self._stop or self._thread is None
            prios = [] if stopped else [p for p, q in self._queues.items() if q]
            if prios:
                state = [len(prios), callback]
                for p in prios:
                    self._queues[p].append((_D_BARRIER, state, None))
                self._length += len(prios)
                self._wake_locked()
                return
            busy = not stopped and self._busy
            if busy:
                # the batch in hand is not dispatched yet: the marker follows it
                self._queues.setdefault(PRIO_HIGHEST, collections.deque()).append(
                    (_D_BARRIER, [1, callback], None))
                self._length += 1
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

    def _put(self, prio: int, item: _Item, wake: bool = True) -> None:
        with self._lock:
            if self._stop:
                # after shutdown nothing is dispatched; give the throttles back at once
                if item[0] in (_D_MESSAGE, _D_LOCAL):
                    item[1]._release_throttles()
                return
            q = self._queues.get(prio)
            if q is None:
                q = self._queues[prio] = collections.deque()
            q.append(item)
            self._length += 1
            if wake:
                self._wake_locked()

    def __len__(self) -> int:
        return self._length

    # --- the thread -------------------------------------------------------------
    def _take_batch(self) -> list[_Item] | None:
        """Up to BATCH_MAX items, highest priority first, FIFO within one; None = stop."""
        lock = self._lock
        lock.acquire()
        try:
            while not self._length or self._stop:
                self._busy = False
                if self._stop:
                    return None
                self._idle = True
                lock.release()
                try:
                    self._wake.acquire()   # released by the producer that finds _idle set
                finally:
                    lock.acquire()
            queues = self._queues
            n = self._length
            if len(queues) == 1:
                q = next(iter(queues.values()))
                if n <= BATCH_MAX:
                    batch = list(q)
                    q.clear()
                else:
                    batch = [q.popleft() for _ in range(BATCH_MAX)]
            else:
                batch = []
                for prio in sorted((p for p, q in queues.items() if q), reverse=True):
                    q = queues[prio]
                    room = BATCH_MAX - len(batch)
                    if len(q) <= room:
                        batch.extend(q)
                        q.clear()
                    else:
                        batch.extend(q.popleft() for _ in range(room))
                        break
            self._length = n - len(batch)
            self._busy = True
            return batch
        finally:
            lock.release()

    def _entry(self) -> None:
        perf = self._perf.here() if self._perf is not None else None
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            held: dict[Throttle, int] = {}   # receive throttles of this batch, given back after it
            try:
                for i, item in enumerate(batch):
                    if self._stop:
                        self._drop(batch[i:])
                        break
                    code = item[0]
                    if code == _D_MESSAGE or code == _D_LOCAL:
                        msg = item[1]
                        if perf is not None and code == _D_MESSAGE:
                            perf.msgr_queued_dispatched += 1
                        try:
                            self._dispatch(item)
                        except Exception:
                            # a dispatcher bug must not stop dispatching for everyone
                            _log.exception("DispatchQueue %s: dispatcher raised on %r", self.name, item)
                        taken = msg._throttled
                        if taken:
                            msg._throttled = None
                            for t, c in taken:
                                held[t] = held.get(t, 0) + c
                        self.dispatched += 1
                        continue
                    if code == _D_BARRIER and held:
                        _put_all(held)   # a flush waiting on the barrier sees the throttles back
                    try:
                        self._dispatch(item)
                    except Exception:
                        _log.exception("DispatchQueue %s: dispatcher raised on %r", self.name, item)
                    if code != _D_BARRIER:
                        self.dispatched += 1
            finally:
                if held:
                    _put_all(held)

    def _drop(self, items: list[_Item]) -> None:
        """Items of a batch the thread took and will not dispatch (the queue stopped)."""
        for code, msg, _conn in items:
            if code in (_D_MESSAGE, _D_LOCAL):
                msg._release_throttles()
            elif code == _D_BARRIER:
                self._barrier_reached(msg, False)

    def _dispatch(self, item: _Item) -> None:
        code, msg, conn = item
        chain = self.chain
        if code == _D_MESSAGE:
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
        with self._lock:
            queues, self._queues = self._queues, {}
            self._length = 0
        n = 0
        for q in queues.values():
            for code, msg, _conn in q:
                if code in (_D_MESSAGE, _D_LOCAL):
                    msg._release_throttles()
                elif code == _D_BARRIER:
                    self._barrier_reached(msg, False)
                    continue
                n += 1
        return n


def _put_all(held: dict[Throttle, int]) -> None:
    """Give back a batch's receive throttles: one ``put`` per throttle."""
    for t, c in held.items():
        t.put(c)
    held.clear()
