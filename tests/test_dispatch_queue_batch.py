"""DispatchQueue hand-offs: batches per wake-up, throttles given back per batch, barriers and
shutdown in the middle of a batch, and wake-ups only when the thread sleeps."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from msgr import Dispatcher, Message
from msgr.dispatch_queue import BATCH_MAX, D_CONNECT, DispatchQueue
from msgr.dispatcher import DispatcherChain
from msgr.throttle import Throttle


def _msg(prio: int, tag: int, throttles: list[tuple[Throttle, int]] | None = None) -> Message:
    m = Message()
    m.header.priority = prio
    m.header.tid = tag
    for t, c in throttles or []:
        assert t.try_get(c)
    m._throttled = list(throttles) if throttles else None
    return m


class Gate(Dispatcher):
    """Records tids; the first message blocks until released (so the rest queue up behind it)."""

    def __init__(self, hold_first: bool = True) -> None:
        self.seen: list[object] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        self.throttle_seen: list[int] = []
        self.watch: Throttle | None = None

    def ms_dispatch(self, msg: Message) -> bool:
        if self.hold_first and not self.seen:
            self.entered.set()
            assert self.release.wait(5)
        self.seen.append(msg.header.tid)
        if self.watch is not None:
            self.throttle_seen.append(self.watch.current)
        return True

    def ms_handle_connect(self, conn: object) -> None:
        self.seen.append(("connect", conn))


def _queue(d: Dispatcher) -> DispatchQueue:
    chain = DispatcherChain()
    chain.add_tail(d)
    return DispatchQueue(chain, "batch")


def _wait_until(cond: Callable[[], bool]) -> bool:
    """Polls cond for up to 5 s; returns its last value (the caller asserts on it)."""
    for _ in range(500):
        if cond():
            return True
        threading.Event().wait(0.01)
    return cond()


def _wait_len(dq: DispatchQueue, seen: list[object], n: int) -> None:
    if not _wait_until(lambda: len(seen) >= n):
        raise AssertionError(f"dispatched {len(seen)} of {n}")


@contextmanager
def _started(dq: DispatchQueue, gate: Gate) -> Iterator[DispatchQueue]:
    """Starts dq's thread; afterwards, even after a failure, opens the gate and stops the thread."""
    dq.start()
    try:
        yield dq
    finally:
        gate.release.set()
        dq.shutdown()
        assert dq.wait(5)


def test_items_queued_while_busy_keep_priority_order_and_throttles_come_back_per_batch():
    d = Gate()
    dq = _queue(d)
    thr = Throttle("dispatch", 0)
    d.watch = thr
    with _started(dq, d):
        dq.enqueue(_msg(127, 0, [(thr, 10)]))
        assert d.entered.wait(5)
        # queued while the thread is busy: one batch, highest priority first, FIFO within one
        for i, prio in enumerate([63, 196, 63, 127], start=1):
            dq.enqueue(_msg(prio, i, [(thr, 10)]))
        dq.queue_event(D_CONNECT, "c")
        d.release.set()
        _wait_len(dq, d.seen, 6)
        assert d.seen == [0, ("connect", "c"), 2, 4, 1, 3]
        # inside the second batch nothing of it was given back yet (the first batch's 10 was)
        assert d.throttle_seen[1:] == [40, 40, 40, 40]
        assert _wait_until(lambda: thr.current == 0)


def test_a_batch_is_bounded():
    d = Gate()
    dq = _queue(d)
    sizes: list[int] = []
    take = dq._take_batch

    def recording_take() -> list | None:
        batch = take()
        if batch is not None:
            sizes.append(len(batch))
        return batch

    dq._take_batch = recording_take  # type: ignore[method-assign]
    with _started(dq, d):
        dq.enqueue(_msg(127, -1))
        assert d.entered.wait(5)
        n = BATCH_MAX + 10
        for i in range(n):
            dq.enqueue(_msg(127, i))
        assert len(dq) == n
        d.release.set()
        _wait_len(dq, d.seen, n + 1)
        assert d.seen == [-1] + list(range(n))
        # so a later, higher-priority item waits for one batch at most
        assert sizes[:3] == [1, BATCH_MAX, 10]


def test_barrier_waits_for_the_batch_in_hand():
    d = Gate()
    dq = _queue(d)
    with _started(dq, d):
        dq.enqueue(_msg(127, 0))
        dq.enqueue(_msg(127, 1))
        assert d.entered.wait(5)
        # the thread took both messages (its batch); the queue itself is empty
        assert len(dq) == 0
        got: list[tuple[bool, list[object]]] = []
        done = threading.Event()
        dq.barrier(lambda ok: (got.append((ok, list(d.seen))), done.set()))
        assert not done.is_set()
        d.release.set()
        assert done.wait(5)
        assert got == [(True, [0, 1])]


def test_shutdown_in_the_middle_of_a_batch_drops_the_rest_and_gives_throttles_back():
    d = Gate()
    dq = _queue(d)
    thr = Throttle("dispatch", 0)
    dq.start()
    try:
        dq.enqueue(_msg(127, 0, [(thr, 1)]))
        assert d.entered.wait(5)
        for i in range(1, 5):
            dq.enqueue(_msg(127, i, [(thr, 1)]))
        results: list[bool] = []
        dq.barrier(results.append)
        assert thr.current == 5
        dq.shutdown()
        d.release.set()
        assert dq.wait(5)
        assert d.seen == [0]          # the message in progress finishes; nothing after it runs
        assert thr.current == 0       # every taken message gave its throttles back
        assert results == [False]     # the barrier reports that the queue stopped first
    finally:
        d.release.set()


def test_producers_wake_the_thread_only_when_it_sleeps():
    d = Gate(hold_first=False)
    dq = _queue(d)
    releases = []
    real = dq._wake

    class CountingLock:
        def acquire(self, *a: object) -> bool:
            return real.acquire(*a)

        def release(self) -> None:
            releases.append(1)
            real.release()

    dq._wake = CountingLock()  # type: ignore[assignment]
    with _started(dq, d):
        # the thread starts and goes to sleep on an empty queue
        assert _wait_until(lambda: dq._idle)
        d.hold_first = True
        dq.enqueue(_msg(127, 0))
        assert d.entered.wait(5)
        for i in range(1, 50):
            dq.enqueue(_msg(127, i))   # the thread is busy: no wake-up for these
        assert len(releases) == 1
        d.release.set()
        _wait_len(dq, d.seen, 50)
        assert d.seen == list(range(50))


def test_an_event_queued_without_wake_waits_for_wake_and_keeps_its_place():
    """queue_event(wake=False) (a worker inside a read handler) leaves the sleeping thread asleep
    until wake(); the event is dispatched in the order it was queued, before later messages."""
    gate = Gate(hold_first=False)
    dq = _queue(gate)
    dq.start()
    try:
        dq.enqueue(_msg(127, 1))
        _wait_len(dq, gate.seen, 1)
        assert _wait_until(lambda: dq._idle)   # the thread has gone back to sleep
        dq.queue_event(D_CONNECT, "c1", wake=False)
        threading.Event().wait(0.1)
        assert gate.seen == [1], "woken without wake()"
        dq.wake()
        _wait_len(dq, gate.seen, 2)
        dq.enqueue(_msg(127, 2))
        _wait_len(dq, gate.seen, 3)
        assert gate.seen == [1, ("connect", "c1"), 2]
    finally:
        dq.shutdown()
