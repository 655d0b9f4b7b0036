"""Worker and NetworkStack: threads, ownership, submit_to, stop/restart, idle CPU."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from eventcenter import EVENT_READABLE, EventCenter, NetworkStack, Worker
from eventcenter.errors import CenterClosedError, EventCenterError, WrongThreadError


def _joined_within(fn, seconds: float = 10.0) -> bool:
    """Run ``fn`` in a thread; True if it returned in time (a hang fails instead of blocking pytest)."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


@pytest.fixture
def stack():
    s = NetworkStack(num_workers=2)
    s.start()
    yield s
    s.stop()


def test_submit_to_runs_on_the_worker_thread_and_returns(stack) -> None:
    w = stack.get_worker()
    c = w.center
    assert not c.in_thread()
    name, inside = c.submit_to(lambda: (threading.current_thread().name, c.in_thread()))
    assert inside is True
    assert name != threading.current_thread().name


def test_submit_to_reraises_the_callbacks_exception(stack) -> None:
    c = stack.get_worker().center

    def bad() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        c.submit_to(bad)
    assert c.submit_to(lambda: 5) == 5  # the loop survived


def test_submit_to_without_wait(stack) -> None:
    c = stack.get_worker().center
    done = threading.Event()
    assert c.submit_to(done.set, wait=False) is None
    assert done.wait(5)


def test_submit_to_from_the_loop_thread_runs_directly(stack) -> None:
    c = stack.get_worker().center

    def outer() -> list[str]:
        order = ["outer"]
        # would deadlock if it queued and waited on its own thread
        order.append(c.submit_to(lambda: "inner"))
        order.append("after")
        return order

    assert c.submit_to(outer) == ["outer", "inner", "after"]


def test_internal_methods_check_the_thread(stack) -> None:
    c = stack.get_worker().center
    with pytest.raises(WrongThreadError):
        c.create_time_event(10, lambda: None)
    with pytest.raises(WrongThreadError):
        c.delete_time_event(1)
    a, b = socket.socketpair()
    try:
        with pytest.raises(WrongThreadError):
            c.create_file_event(a.fileno(), EVENT_READABLE, lambda f, m: None)
        with pytest.raises(WrongThreadError):
            c.delete_file_event(a.fileno(), EVENT_READABLE)
        with pytest.raises(WrongThreadError):
            c.process_events(0)
        # the same calls are fine on the owner thread
        tid = c.submit_to(lambda: c.create_time_event(10_000_000, lambda: None))
        c.submit_to(lambda: c.delete_time_event(tid))
        c.submit_to(lambda: c.create_file_event(a.fileno(), EVENT_READABLE, lambda f, m: None))
        c.submit_to(lambda: c.delete_file_event(a.fileno(), EVENT_READABLE))
    finally:
        a.close()
        b.close()


def test_setup_phase_allows_any_thread_then_worker_runs_it() -> None:
    w = Worker(3)
    fired = threading.Event()
    result: list[bool] = []
    # before start: no owner, the main thread may arm timers
    w.center.create_time_event(1_000, lambda: (result.append(w.center.in_thread()), fired.set()))
    w.start()
    try:
        assert fired.wait(5)
        assert result == [True]
    finally:
        w.close()


def test_file_events_on_a_worker(stack) -> None:
    w = stack.get_worker()
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []
    done = threading.Event()

    def on_read(fd: int, mask: int) -> None:
        got.append(a.recv(100))
        done.set()

    try:
        w.center.submit_to(lambda: w.center.create_file_event(a.fileno(), EVENT_READABLE, on_read))
        b.send(b"hello")
        assert done.wait(5)
        assert got == [b"hello"]
        w.center.submit_to(lambda: w.center.delete_file_event(a.fileno(), EVENT_READABLE))
    finally:
        a.close()
        b.close()


def test_get_worker_picks_least_loaded() -> None:
    s = NetworkStack(num_workers=3)
    try:
        picks = [s.get_worker() for _ in range(6)]
        assert [w.index for w in picks] == [0, 1, 2, 0, 1, 2]
        assert [w.references for w in s.workers] == [2, 2, 2]
        s.workers[1].release()
        s.workers[1].release()
        assert s.get_worker() is s.workers[1]
        s.workers[2].acquire()
        assert [w.references for w in s.workers] == [2, 1, 3]
        assert s.get_worker() is s.workers[1]
        w = Worker(9)
        w.release()
        assert w.references == 0  # never negative
    finally:
        s.stop()


def test_stop_with_pending_timers_and_queued_events_does_not_hang() -> None:
    s = NetworkStack(num_workers=2)
    s.start()
    ran: list[int] = []
    for w in s.workers:
        w.center.submit_to(lambda c=w.center: [c.create_time_event(60_000_000, lambda: ran.append(-1))
                                               for _ in range(100)])
    gate = threading.Event()
    s.workers[0].center.dispatch_event_external(lambda: gate.wait(0.2))  # keep worker 0 busy
    for i in range(1_000):
        s.workers[0].center.dispatch_event_external(lambda i=i: ran.append(i))
    assert _joined_within(s.stop)
    # documented: queued external events run before the worker exits; timers do not
    assert ran == list(range(1_000))
    assert all(w.center.closed and not w.is_alive() for w in s.workers)


def test_stop_while_busy() -> None:
    """A worker flooded with self-renewing work (timers and external events) still stops."""
    s = NetworkStack(num_workers=1)
    s.start()
    c = s.workers[0].center
    count = [0]

    def spin_external() -> None:
        count[0] += 1
        c.dispatch_event_external(spin_external)

    def spin_timer() -> None:
        count[0] += 1
        c.create_time_event(0, spin_timer)

    c.dispatch_event_external(spin_external)
    c.submit_to(lambda: c.create_time_event(0, spin_timer))
    time.sleep(0.05)
    assert count[0] > 10  # it is busy
    assert _joined_within(s.stop)
    assert not s.workers[0].is_alive()


def test_waiter_on_a_queued_call_gets_an_error_when_center_closes() -> None:
    w = Worker(0)
    w.start()
    c = w.center
    gate = threading.Event()
    c.dispatch_event_external(lambda: gate.wait(5))
    outcome: list[object] = []

    def waiter() -> None:
        try:
            outcome.append(c.submit_to(lambda: "ran"))
        except CenterClosedError as exc:
            outcome.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    w.stop()
    gate.set()
    w.join()
    w.center.close()
    t.join(5)
    assert not t.is_alive()
    # the waiter's call was queued before the stop: it ran during the stop drain
    assert outcome == ["ran"]


def test_close_fails_waiters_still_queued() -> None:
    c = EventCenter(name="x")
    c._set_owner()  # this thread owns it but never turns the loop
    outcome: list[object] = []

    def waiter() -> None:
        try:
            outcome.append(c.submit_to(lambda: "ran"))
        except CenterClosedError as exc:
            outcome.append(type(exc))

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 5
    while not c._external and time.monotonic() < deadline:
        time.sleep(0.001)
    c.close()
    t.join(5)
    assert outcome == [CenterClosedError]


def test_close_while_running_is_refused(stack) -> None:
    with pytest.raises(EventCenterError):
        stack.workers[0].center.close()


def test_stop_from_a_worker_thread_is_refused(stack) -> None:
    c = stack.workers[0].center
    with pytest.raises(WrongThreadError):
        c.submit_to(stack.stop)


def test_restart_after_stop() -> None:
    s = NetworkStack(num_workers=2)
    s.start()
    first = list(s.workers)
    assert s.get_worker().center.submit_to(lambda: 1) == 1
    s.stop()
    s.stop()  # idempotent
    s.start()
    try:
        assert s.running
        assert all(w.is_alive() for w in s.workers)
        assert not any(w in first for w in s.workers)  # fresh workers and centers
        w = s.get_worker()
        assert w.center.submit_to(lambda: w.center.in_thread()) is True
    finally:
        s.stop()


def test_worker_restart_keeps_its_center() -> None:
    w = Worker(0)
    w.start()
    c = w.center
    w.stop()
    w.start()  # stop in flight: start waits for the old thread, then runs a new one
    try:
        assert w.center is c
        assert c.submit_to(c.in_thread) is True
    finally:
        w.close()


def test_idle_stack_uses_no_cpu() -> None:
    """Correctness, not speed: a busy-wait would burn ~1 s of CPU here."""
    s = NetworkStack(num_workers=2)
    s.start()
    try:
        for w in s.workers:  # a far timer, like an idle connection's keepalive
            w.center.submit_to(lambda c=w.center: c.create_time_event(30_000_000, lambda: None))
        time.sleep(0.05)
        cpu0 = time.process_time()
        time.sleep(1.0)
        used = time.process_time() - cpu0
    finally:
        s.stop()
    assert used < 0.05, f"idle stack used {used:.3f} s of CPU in 1 s"


def test_get_worker_from_a_worker_callback_during_stop_does_not_deadlock() -> None:
    s = NetworkStack(num_workers=2)
    s.start()
    got: list[object] = []
    gate = threading.Event()
    c = s.workers[0].center
    c.dispatch_event_external(lambda: gate.wait(0.2))  # still busy when stop() begins
    c.dispatch_event_external(lambda: got.append(s.get_worker()))  # runs in the stop drain
    assert _joined_within(s.stop)
    assert len(got) == 1
