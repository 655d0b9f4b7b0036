"""External events: many producers, exactly-once delivery, order, wake-ups."""
from __future__ import annotations

import os
import random
import sys
import threading
import time

import pytest

from eventcenter import EventCenter, Worker
from eventcenter.errors import CenterClosedError


@pytest.fixture
def worker():
    w = Worker(0)
    w.start()
    yield w
    w.close()


def test_eight_threads_each_event_exactly_once_in_per_thread_order(worker) -> None:
    c = worker.center
    per_thread = 5_000
    seen: list[tuple[int, int]] = []  # appended only on the loop thread
    done = threading.Event()
    total = 8 * per_thread

    def record(t: int, i: int) -> None:
        seen.append((t, i))
        if len(seen) == total:
            done.set()

    def producer(t: int) -> None:
        for i in range(per_thread):
            c.dispatch_event_external(lambda t=t, i=i: record(t, i))
            if i % 512 == 0:
                time.sleep(0)  # let the others interleave

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert done.wait(10), f"only {len(seen)} of {total} external events ran"
    assert len(seen) == total and len(set(seen)) == total
    for t in range(8):
        assert [i for tt, i in seen if tt == t] == list(range(per_thread))


@pytest.fixture
def fast_switching():
    """Hand the GIL over every few µs so producers run at every point of the loop's turn."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def _release_then_linger(sem: threading.Semaphore, spins: int):
    def cb() -> None:
        sem.release()
        # keep the loop thread busy a little after the producer was woken, so
        # the producer's next dispatch lands anywhere in the rest of the turn
        for _ in range(spins):
            pass
    return cb


def test_no_lost_wakeup(worker, fast_switching) -> None:
    """The worker blocks in epoll with no timeout, so a single missed wake-up hangs one round."""
    c = worker.center
    rng = random.Random(7)
    ran = threading.Semaphore(0)
    for round_no in range(20_000):
        c.dispatch_event_external(_release_then_linger(ran, rng.randrange(0, 300)))
        if rng.random() < 0.01:
            time.sleep(0.0002)  # let the loop get well into epoll_wait
        assert ran.acquire(timeout=5), f"wake-up lost in round {round_no}"


def test_no_lost_wakeup_with_concurrent_producers(worker, fast_switching) -> None:
    c = worker.center
    rounds = 3_000
    failures: list[str] = []

    def producer(k: int) -> None:
        rng = random.Random(k)
        ran = threading.Semaphore(0)
        for r in range(rounds):
            c.dispatch_event_external(_release_then_linger(ran, rng.randrange(0, 300)))
            if not ran.acquire(timeout=5):
                failures.append(f"producer {k} round {r}")
                return

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []


def test_wakeups_are_coalesced_while_loop_is_busy(monkeypatch) -> None:
    writes = [0]
    real_write = os.eventfd_write

    def counting_write(fd: int, value: int) -> None:
        writes[0] += 1
        real_write(fd, value)

    monkeypatch.setattr(os, "eventfd_write", counting_write)
    w = Worker(0)
    w.start()
    try:
        c = w.center
        in_cb = threading.Event()
        release = threading.Event()
        ran = [0]

        def block() -> None:
            in_cb.set()
            release.wait(5)

        c.dispatch_event_external(block)
        assert in_cb.wait(5)
        writes[0] = 0
        for _ in range(1_000):  # the loop is inside a callback: awake, not sleeping
            c.dispatch_event_external(lambda: ran.__setitem__(0, ran[0] + 1))
        assert writes[0] == 0
        release.set()
        assert c.submit_to(lambda: ran[0]) == 1_000
    finally:
        w.close()


def test_sleeping_loop_gets_exactly_one_wakeup_for_a_burst(monkeypatch) -> None:
    writes = [0]
    real_write = os.eventfd_write
    monkeypatch.setattr(os, "eventfd_write", lambda fd, v: (writes.__setitem__(0, writes[0] + 1), real_write(fd, v)))
    c = EventCenter(name="manual")
    try:
        c._sleeping = True  # as the owner leaves it just before epoll_wait
        for _ in range(100):
            c.dispatch_event_external(lambda: None)
        assert writes[0] == 1
        # the wake-up is pending in the eventfd: the next turn does not block
        assert c.process_events(None) == 100
    finally:
        c.close()


def test_external_events_from_inside_callbacks_run_next_turn() -> None:
    c = EventCenter(name="manual")
    try:
        order: list[int] = []

        def first() -> None:
            order.append(1)
            c.dispatch_event_external(lambda: order.append(3))

        c.dispatch_event_external(first)
        c.dispatch_event_external(lambda: order.append(2))
        assert c.process_events(0) == 2
        assert order == [1, 2]
        assert c.process_events(None) == 1  # queued work means no sleep
        assert order == [1, 2, 3]
    finally:
        c.close()


@pytest.mark.allow_error_log("external callback .* raised")   # the test provokes this line
def test_raising_external_callback_is_logged_and_loop_continues(caplog) -> None:
    c = EventCenter(name="manual")
    try:
        after: list[int] = []
        c.dispatch_event_external(lambda: 1 / 0)
        c.dispatch_event_external(lambda: after.append(1))
        with caplog.at_level("ERROR", logger="eventcenter"):
            assert c.process_events(0) == 2
        assert after == [1]
        assert any(r.exc_info and isinstance(r.exc_info[1], ZeroDivisionError) for r in caplog.records)
    finally:
        c.close()


def test_dispatch_after_close_raises() -> None:
    c = EventCenter(name="gone")
    c.close()
    c.close()  # idempotent
    with pytest.raises(CenterClosedError):
        c.dispatch_event_external(lambda: None)
    with pytest.raises(CenterClosedError):
        c.submit_to(lambda: None)
    with pytest.raises(CenterClosedError):
        c.process_events(0)
