"""asyncio on top of pymsgr: awaitable requests, flushes and shutdown; messages into a loop.

pymsgr runs its own threads (workers, the dispatch thread); these helpers bridge them to a running
asyncio loop (the standard one or uvloop) without ever blocking it::

    async def main():
        inbox = AsyncDispatcher()              # bound to the running loop
        rpc = RpcClient(timeout=5)
        ms.add_dispatcher_head(rpc)            # replies first, the rest into the loop
        ms.add_dispatcher_tail(inbox)
        ms.start()
        conn = ms.connect_to(EntityName.TYPE_OSD, addr)
        reply = await request(rpc, conn, MPing())
        async for msg in inbox: ...
        await flush(conn, timeout=5)
        await shutdown(ms, linger=1.0)

Cancelling a task that awaits any of them leaves nothing behind: a request is withdrawn from its
RpcClient, a flush from its connection, and a message not yet taken stays queued.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgr.dispatcher import Dispatcher
from msgr.errors import DispatcherClosed
from msgr.message import Message
from msgr.rpc import ReplyType, RpcClient

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection
    from msgr.messenger import AsyncMessenger

__all__ = ["AsyncDispatcher", "request", "flush", "shutdown"]

_log = logging.getLogger("msgr.aio")
_UNSET: Any = object()
_CLOSED: Any = object()


async def request(rpc: RpcClient, conn: Connection, msg: Message, timeout: float | None = _UNSET,
                  reply_type: ReplyType = None) -> Message:
    """Send ``msg`` through ``rpc`` and await its reply (see :meth:`RpcClient.call`).

    Raises what the request's future fails with (:class:`msgr.errors.RequestFailed` subclasses,
    RequestTimeout after ``timeout`` seconds). Cancelling the awaiting task withdraws the request.
    """
    fut = rpc.call(conn, msg, rpc.timeout if timeout is _UNSET else timeout, reply_type)
    return await asyncio.wrap_future(fut)


async def flush(conn: Connection, timeout: float | None = None) -> bool:
    """Await :meth:`Connection.flush <msgr.connection_base.Connection.flush>` without blocking the
    loop: True once what was queued before is written (lossy) or acked (lossless), False on timeout
    or when the session ends first. Cancelling the awaiting task withdraws the flush."""
    fut = asyncio.wrap_future(conn.flush_future())
    try:
        return bool(await asyncio.wait_for(fut, timeout))
    except TimeoutError:
        return False


async def shutdown(ms: AsyncMessenger, linger: float = 0.0) -> None:
    """``ms.shutdown(linger)`` then ``ms.wait()`` on a helper thread; the loop keeps running.

    Cancelling the awaiting task does not stop the shutdown, which finishes on its thread.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def run() -> None:
        err: BaseException | None = None
        try:
            ms.shutdown(linger)
            ms.wait()
        except BaseException as exc:   # handed to the awaiting task
            err = exc
        try:
            loop.call_soon_threadsafe(settle, err)
        except RuntimeError:   # the loop is closed: nobody awaits any more
            if err is not None:
                _log.warning("shutdown of %r failed after its loop closed: %s", ms, err)

    threading.Thread(target=run, name=f"msgr-aio-shutdown-{ms.my_name}", daemon=True).start()
    await done


class AsyncDispatcher(Dispatcher):
    """Hands the messages it accepts to a running asyncio loop: ``await get()`` or ``async for``.

    Build it inside the loop (or pass ``loop``). ``accept`` (a predicate on the message) limits what
    it takes; everything else goes on to the next dispatcher. The dispatch thread never waits for
    the loop: a message goes over with ``call_soon_threadsafe`` and keeps its receive-side throttles
    (``ms_dispatch_throttle_bytes``, the policy's throttles) until a consumer takes it, so a slow
    consumer makes the messenger stop reading from the network instead of queueing without bound.
    :meth:`close` gives back the throttles of what was never taken.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None,
                 accept: Callable[[Message], bool] | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._accept = accept
        self._queue: asyncio.Queue[tuple[Message, Callable[[], None]]] = asyncio.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._in_flight = 0   # handed to call_soon_threadsafe, not yet in the queue

    def qsize(self) -> int:
        """Messages waiting to be taken."""
        return self._queue.qsize() + self._in_flight

    # --- the dispatch thread ------------------------------------------------------
    def ms_dispatch(self, msg: Message) -> bool:
        """Take ``msg`` for the loop (holding its throttles); False if not accepted or closed."""
        if self._closed or (self._accept is not None and not self._accept(msg)):
            return False
        release = msg._hold_throttles()
        with self._lock:
            self._in_flight += 1
        try:
            self._loop.call_soon_threadsafe(self._put, msg, release)
        except RuntimeError:   # the loop is closed
            with self._lock:
                self._in_flight -= 1
            release()
            return False
        return True

    # --- the loop -------------------------------------------------------------------
    def _put(self, msg: Message, release: Callable[[], None]) -> None:
        with self._lock:
            self._in_flight -= 1
        if self._closed:
            release()
            return
        self._queue.put_nowait((msg, release))

    async def get(self) -> Message:
        """The next message (waits for one); raises DispatcherClosed once closed and drained."""
        msg, release = await self._queue.get()
        if msg is _CLOSED:
            self._queue.put_nowait((msg, release))   # every other waiter wakes too
            raise DispatcherClosed("AsyncDispatcher is closed")
        release()
        return msg

    def get_nowait(self) -> Message | None:
        """The next message if one is waiting, else None."""
        try:
            msg, release = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if msg is _CLOSED:
            self._queue.put_nowait((msg, release))
            raise DispatcherClosed("AsyncDispatcher is closed")
        release()
        return msg

    def __aiter__(self) -> AsyncDispatcher:
        """``async for msg in inbox`` takes messages until :meth:`close`."""
        return self

    async def __anext__(self) -> Message:
        """The next message; ends the iteration once closed."""
        try:
            return await self.get()
        except DispatcherClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop taking messages, give back the throttles of those never taken, end ``async for``.

        Call it on the loop's thread."""
        self._closed = True
        while True:
            try:
                msg, release = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if msg is not _CLOSED:
                release()
        self._queue.put_nowait((_CLOSED, _noop))


def _noop() -> None:
    pass
