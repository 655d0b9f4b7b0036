"""The delivery half of AsyncConnection: what its protocol delivered, to the dispatchers.

Messages go to the first fast dispatcher that takes them (on the worker) or else to the
DispatchQueue; ms_inject_delay_* holds them back in order; connection events run the fast
callbacks at once and queue the usual ones only when some dispatcher has them; discarded
messages are reported through the queue. Runs on the connection's worker, under its lock.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from msgr import debug
from msgr.dispatch_queue import CODE_OF_EVENT
from msgr.message import release_throttles
from msgr.protocol import actions as A

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection
    from msgr.message import Message
    from msgr.messenger import MessengerHost

__all__ = ["DeliveringConnection"]

_log = logging.getLogger("msgr.connection")

_mono_ns = time.monotonic_ns   # perf running times (real time, whatever clock the protocol runs on)
_dbg = debug.gate   # debug_ms: the hot paths read one of its booleans before any log line
# by id(): Enum.__hash__ is a Python-level function (members are singletons, their ids stable)
_CODE_BY_ID = {id(event): code for event, code in CODE_OF_EVENT.items()}
_ACCEPT, _CONNECT = A.ConnEvent.ACCEPT, A.ConnEvent.CONNECT   # per session: not through the Enum hook


class DeliveringConnection:
    """Mixin of AsyncConnection; the connection supplies the fields below."""

    _host: MessengerHost
    _perf: Any
    _inject: Any
    _proto: Any
    _center: Any
    _now_us: Any
    _delayed: list[tuple[int, Message]]
    _delay_timer: int | None
    _in_read: bool
    _wake_dispatch: bool
    _down: bool

    if TYPE_CHECKING:  # pragma: no cover - supplied by AsyncConnection's other bases
        def _fail_flushes(self) -> None: ...

    def _dispatch(self, msg: Message, held: bool = False) -> None:
        """A delivered message to the dispatchers: fast dispatch here, or the DispatchQueue
        (``held``: released after an ms_inject_delay_* hold, already counted)."""
        if not held:
            self._perf.msgr_recv_messages += 1
            if _dbg.messages:
                debug.trace_received(self, msg)
            if self._delayed or self._inject.delay_types:
                delay = self._inject.delivery_delay_us(self._proto.peer_type)
                if delay or self._delayed:
                    self._hold_back(msg, delay)
                    return
        self._dispatch_all((msg,), True)

    def _dispatch_all(self, msgs: Sequence[Message], counted: bool = False) -> None:
        """One receive call's messages, in order (``counted``: they went through ``_dispatch``).

        Uncounted, they go one by one through ``_dispatch`` when a debug trace or an injected delay
        is on; else what cannot change within the call (counters, switches, the chain) is read
        once, not per message. Each message goes to the first fast dispatcher that takes it or
        else to the DispatchQueue; the chain's walk, inlined (it runs once per message). The
        receive throttles of the fast-dispatched ones are given back when the batch is done, on
        every path (one put per throttle for a run of same-size messages instead of one per
        message; a batch is one read's worth)."""
        if not counted:
            if _dbg.messages or self._delayed or self._inject.delay_types:
                for msg in msgs:
                    self._dispatch(msg)
                return
            self._perf.msgr_recv_messages += len(msgs)
        chain = self._host.dispatchers
        fast = chain.fast_dispatchers
        done: list[Message] = []
        t0 = _mono_ns()   # one span per call, not two clock reads per message
        try:
            if len(fast) == 1 and not chain.preprocessors:
                # the usual chain (one fast dispatcher, no preprocessor)
                d = fast[0]
                if len(msgs) == 1:   # a round trip's read: no bound methods made
                    msg = msgs[0]
                    if d.ms_can_fast_dispatch(msg):
                        done.append(msg)
                        d.ms_fast_dispatch(msg)
                    else:
                        self._host.dispatch_queue.enqueue(msg)
                    return
                can, dispatch, enqueue = d.ms_can_fast_dispatch, d.ms_fast_dispatch, None
                for msg in msgs:
                    if can(msg):
                        done.append(msg)
                        dispatch(msg)
                    else:
                        if enqueue is None:
                            enqueue = self._host.dispatch_queue.enqueue
                        enqueue(msg)
                return
            pre = chain.preprocessors
            for msg in msgs:
                for d in pre:
                    d.ms_fast_preprocess(msg)
                for d in fast:
                    if d.ms_can_fast_dispatch(msg):
                        done.append(msg)
                        d.ms_fast_dispatch(msg)
                        break
                else:
                    self._host.dispatch_queue.enqueue(msg)
        finally:
            if done:
                release_throttles(done)
                perf = self._perf
                perf.msgr_fast_dispatched += len(done)
                span = _mono_ns() - t0
                perf.fast_ns += span
                if self._in_read:   # the read event's span, which it adds to recv_ns, holds this one
                    perf.recv_ns -= span

    def _hold_back(self, msg: Message, delay_us: int) -> None:
        # later messages queue behind a delayed one: delivery order is kept
        self._delayed.append((self._now_us() + delay_us, msg))
        if self._delay_timer is None:
            self._delay_timer = self._center.create_time_event(delay_us, self._release_delayed)

    def _release_delayed(self) -> None:
        self._delay_timer = None
        now = self._now_us()
        while self._delayed and self._delayed[0][0] <= now:
            self._dispatch(self._delayed.pop(0)[1], True)
        if self._delayed:
            self._delay_timer = self._center.create_time_event(self._delayed[0][0] - now, self._release_delayed)

    def _notify(self, event: A.ConnEvent) -> None:
        # the fast callbacks first, here (before anything of this session is dispatched); the
        # queued one only if some dispatcher has it (else the dispatch thread is not woken)
        if event is _ACCEPT:
            self._host.dispatchers.handle_fast_accept(cast("Connection", self))
        elif event is _CONNECT:
            self._host.dispatchers.handle_fast_connect(cast("Connection", self))
        if self._in_read:
            # queued now (in order with this event's messages), the thread woken when the read
            # handler ends: after its write, so a handshake reply is not held up behind the
            # dispatch thread taking the GIL for ms_handle_accept
            if self._host.dispatch_queue.queue_event(_CODE_BY_ID[id(event)], self, wake=False):
                self._wake_dispatch = True
            return
        self._host.dispatch_queue.queue_event(_CODE_BY_ID[id(event)], self)

    def _report_discarded(self, msgs: tuple[Message, ...]) -> None:
        if self._down:
            # mark_down / shutdown: the caller ended the session; Ceph drops the queue without a word,
            # so only a debug line (the ms_handle_discarded hook still sees them, a no-op by default)
            _log.debug("%r: marked down with %d unsent message(s)", self, len(msgs))
            self._host.note_dropped_unsent(len(msgs))
        else:
            _log.warning("%r: session reset discarded %d unsent message(s)", self, len(msgs))
        self._fail_flushes()
        self._host.dispatch_queue.queue_discarded(self, msgs)
