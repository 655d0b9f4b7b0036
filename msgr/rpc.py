"""Request/reply over a messenger: replies matched to requests by ``tid``, as futures.

Ceph's clients put a transaction id in the header of a request and the
server copies it into its reply. :class:`RpcClient` does that bookkeeping::

    rpc = RpcClient(timeout=5.0)
    ms.add_dispatcher_head(rpc)          # first, so it sees replies and resets before the others
    fut = rpc.call(conn, MyRequest(), reply_type=MyReply)
    reply = fut.result()                 # a concurrent.futures.Future of the reply message

and the serving side answers with :func:`reply_to`. A request whose reply can
no longer come fails its future with a :class:`msgr.errors.RequestFailed`:
:class:`~msgr.errors.RequestTimeout` (the ``timeout`` passed), :class:`~msgr.errors.ConnectionReset`
(``ms_handle_reset``: a lossy session ended), :class:`~msgr.errors.RemoteReset` (the peer reset
the session), :class:`~msgr.errors.RequestDiscarded` (the request was never sent) or
:class:`~msgr.errors.RequestAborted` (:meth:`RpcClient.close`). Cancelling the future withdraws
the request; nothing of it stays behind.

Threads: replies are matched on the dispatch thread (or on the worker with ``fast=True``), so
never block on a future inside a Dispatcher callback; futures' callbacks run on those threads too.
A connection marked down by the application fires no callback: requests already sent on it end by
their timeout (or ``close``). When two peers both send requests, give each call its ``reply_type``:
otherwise a peer's request that happens to carry one of our pending tids would be taken for a reply.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from msgr.dispatcher import Dispatcher
from msgr.errors import ConnectionReset, RemoteReset, RequestAborted, RequestDiscarded, RequestFailed, RequestTimeout
from msgr.message import Message

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection

__all__ = ["RpcClient", "reply_to"]

_log = logging.getLogger("msgr.rpc")
_UNSET: Any = object()
ReplyType = int | type[Message] | Iterable[int | type[Message]] | None


def reply_to(request: Message, reply: Message) -> None:
    """Send ``reply`` to the sender of ``request`` with the request's tid (the serving side)."""
    conn = request.get_connection()
    if conn is None:
        raise ValueError(f"{request!r} has no connection to reply on (was it received?)")
    reply.tid = request.tid
    conn.send_message(reply)


def _type_numbers(reply_type: ReplyType) -> frozenset[int] | None:
    if reply_type is None:
        return None
    items = [reply_type] if isinstance(reply_type, (int, type)) else list(reply_type)
    return frozenset(t if isinstance(t, int) else t.TYPE for t in items)


class _Pending:
    __slots__ = ("tid", "conn", "request", "future", "types")

    def __init__(self, tid: int, conn: Connection, request: Message, future: Future[Any],
                 types: frozenset[int] | None) -> None:
        self.tid = tid
        self.conn = conn
        self.request = request
        self.future = future
        self.types = types


class RpcClient(Dispatcher):
    """A Dispatcher that sends requests and completes a future with each one's reply.

    ``timeout`` (seconds) is the default of :meth:`call` (None: wait for ever, unless reset);
    ``fast=True`` matches replies on the worker thread (fast dispatch), saving the hop through the
    dispatch queue; the futures' callbacks then run on the worker and must not block.
    """

    def __init__(self, timeout: float | None = None, fast: bool = False) -> None:
        self.timeout = timeout
        self.fast = fast
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._tids = itertools.count(1)
        self._closed = False
        self._deadlines: list[tuple[float, int, Future[Message]]] = []   # heap: (monotonic, tid, future)
        self._timer_cond = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None

    # --- requests ------------------------------------------------------------
    def call(self, conn: Connection, request: Message, timeout: float | None = _UNSET,
             reply_type: ReplyType = None) -> Future[Message]:
        """Send ``request`` on ``conn`` and return a future of its reply.

        The request gets a fresh tid unless it already has one (which must not be pending).
        ``timeout`` (seconds, default the client's) fails the future with RequestTimeout;
        ``reply_type`` (a TYPE number, a Message class, or several) only lets replies of those
        types match. Never blocks; any thread.
        """
        if timeout is _UNSET:
            timeout = self.timeout
        fut: Future[Message] = Future()
        with self._lock:
            if self._closed:
                raise RequestAborted("RpcClient is closed", request, conn)
            tid = request.tid or next(self._tids)
            if tid in self._pending:
                raise ValueError(f"tid {tid} is already waiting for a reply")
            request.tid = tid
            self._pending[tid] = _Pending(tid, conn, request, fut, _type_numbers(reply_type))
            if timeout is not None:
                self._arm(time.monotonic() + timeout, tid, fut)
        fut.add_done_callback(functools.partial(self._forget_cancelled, tid))
        try:
            conn.send_message(request)
        except BaseException:
            self._pop(tid, fut)
            fut.cancel()
            raise
        return fut

    def __len__(self) -> int:
        """How many requests wait for a reply."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Fail every waiting request with RequestAborted; later calls raise it. Idempotent."""
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
            self._deadlines.clear()
            self._timer_cond.notify_all()
        for p in pending:
            self._fail(p, RequestAborted("RpcClient closed while waiting for the reply", p.request, p.conn))

    # --- Dispatcher: replies -------------------------------------------------------
    def ms_can_fast_dispatch_any(self) -> bool:
        """True when built with ``fast=True``."""
        return self.fast

    def ms_can_fast_dispatch(self, msg: Message) -> bool:
        """With ``fast=True``: take a reply to a pending request on the worker."""
        return self.fast and self._match(msg, take=False) is not None

    def ms_fast_dispatch(self, msg: Message) -> None:
        """Complete the request ``msg`` answers (on the worker)."""
        self.ms_dispatch(msg)

    def ms_dispatch(self, msg: Message) -> bool:
        """Complete the request ``msg`` answers; False (not ours) for anything else."""
        p = self._match(msg, take=True)
        if p is None:
            return False
        try:
            p.future.set_result(msg)
        except InvalidStateError:   # cancelled meanwhile
            pass
        return True

    def _match(self, msg: Message, take: bool) -> _Pending | None:
        tid = msg.tid
        if not tid:
            return None
        with self._lock:
            p = self._pending.get(tid)
            if p is None or p.conn is not msg.get_connection() or (
                    p.types is not None and msg.get_type() not in p.types):
                return None
            if take:
                del self._pending[tid]
            return p

    # --- Dispatcher: failures ------------------------------------------------------
    def ms_handle_reset(self, conn: Connection) -> bool:
        """A lossy session ended: its requests fail with ConnectionReset (others see it too)."""
        for p in self._take_conn(conn):
            self._fail(p, ConnectionReset(f"connection to {conn.peer_name} reset before the reply",
                                          p.request, conn))
        return False

    def ms_handle_remote_reset(self, conn: Connection) -> None:
        """The peer reset the session (it restarted): nothing sent before will be answered."""
        for p in self._take_conn(conn):
            self._fail(p, RemoteReset(f"{conn.peer_name} reset the session before the reply",
                                      p.request, conn))

    def ms_handle_discarded(self, conn: Connection, messages: tuple[Message, ...]) -> None:
        """Requests the session dropped unsent fail with RequestDiscarded."""
        for msg in messages:
            p = self._pop(msg.tid, None, request=msg)
            if p is not None:
                self._fail(p, RequestDiscarded("the request was discarded unsent (session closed or reset)",
                                               msg, conn))

    # --- bookkeeping -----------------------------------------------------------------
    def _pop(self, tid: int, fut: Future[Any] | None, request: Message | None = None) -> _Pending | None:
        with self._lock:
            p = self._pending.get(tid)
            if p is None or (fut is not None and p.future is not fut) or (
                    request is not None and p.request is not request):
                return None
            del self._pending[tid]
            return p

    def _take_conn(self, conn: Connection) -> list[_Pending]:
        with self._lock:
            mine = [p for p in self._pending.values() if p.conn is conn]
            for p in mine:
                del self._pending[p.tid]
        return mine

    @staticmethod
    def _fail(p: _Pending, exc: RequestFailed) -> None:
        try:
            p.future.set_exception(exc)
        except InvalidStateError:
            pass

    def _forget_cancelled(self, tid: int, fut: Future[Any]) -> None:
        if fut.cancelled():
            self._pop(tid, fut)

    # --- timeouts: one daemon thread per client, started with the first deadline --------
    def _arm(self, deadline: float, tid: int, fut: Future[Any]) -> None:
        """Under the lock: add a deadline and wake the timer thread if it is now the first."""
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 64:
            # answered requests leave their entry until it surfaces: drop them now and then, so a
            # long timeout under a high request rate does not keep every reply alive until it ends
            heap[:] = [e for e in heap if not e[2].done()]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, tid, fut))
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="msgr-rpc-timeouts", daemon=True)
            self._timer.start()
        elif heap[0][2] is fut:
            self._timer_cond.notify()

    def _run_timer(self) -> None:
        running = True
        while running:
            expired: list[_Pending] = []
            with self._lock:
                while True:
                    heap = self._deadlines
                    if self._closed or not heap:
                        self._timer = None   # the next deadline starts a new thread
                        running = False
                        break
                    deadline, tid, fut = heap[0]
                    if fut.done():
                        heapq.heappop(heap)   # answered or cancelled
                        continue
                    now = time.monotonic()
                    if deadline <= now:
                        heapq.heappop(heap)
                        p = self._pending.get(tid)
                        if p is not None and p.future is fut:
                            del self._pending[tid]
                            expired.append(p)
                        continue
                    if expired:
                        break
                    self._timer_cond.wait(deadline - now)
            for p in expired:   # outside the lock: the futures' callbacks may call us again
                self._fail(p, RequestTimeout(f"no reply to {p.request!r} from {p.conn.peer_name}",
                                             p.request, p.conn))
