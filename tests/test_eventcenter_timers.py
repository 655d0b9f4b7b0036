"""Time events on a FakeClock: order, cancellation, scale, changes from inside callbacks."""
from __future__ import annotations

import random

import pytest

from eventcenter import EventCenter
from eventcenter.clock import FakeClock, MonotonicClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_us=1_000)


@pytest.fixture
def center(clock: FakeClock):
    c = EventCenter(name="t", clock=clock)
    yield c
    c.close()


def test_fake_clock_rejects_going_backwards() -> None:
    c = FakeClock(5)
    c.advance(0)
    c.advance(7)
    assert c.now_us() == 12
    with pytest.raises(ValueError):
        c.advance(-1)
    assert c.now_us() == 12


def test_monotonic_clock_is_in_microseconds_and_monotonic() -> None:
    import time
    clk = MonotonicClock()
    a = clk.now_us()
    b = clk.now_us()
    assert b >= a
    assert abs(a - time.monotonic() * 1e6) < 1e6


def test_timers_fire_in_deadline_order_with_microsecond_delays(center, clock) -> None:
    fired: list[int] = []
    delays = [7, 3, 1, 5, 2, 1000, 999, 4]
    for d in delays:
        center.create_time_event(d, lambda d=d: fired.append(d))
    # nothing is due before time moves
    assert center.process_events(0) == 0
    assert fired == []
    clock.advance(3)
    assert center.process_events(0) == 3
    assert fired == [1, 2, 3]
    clock.advance(995)  # now +998: 999 is not due yet
    center.process_events(0)
    assert fired == [1, 2, 3, 4, 5, 7]
    clock.advance(1)
    center.process_events(0)
    assert fired[-1] == 999
    clock.advance(1)
    center.process_events(0)
    assert fired == sorted(delays)


def test_equal_deadlines_fire_in_creation_order(center, clock) -> None:
    fired: list[int] = []
    for i in range(50):
        center.create_time_event(10, lambda i=i: fired.append(i))
    clock.advance(10)
    assert center.process_events(0) == 50
    assert fired == list(range(50))


def test_ids_are_distinct_ints(center) -> None:
    ids = [center.create_time_event(1, lambda: None) for _ in range(100)]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 100


def test_cancel_before_firing(center, clock) -> None:
    fired: list[str] = []
    a = center.create_time_event(5, lambda: fired.append("a"))
    center.create_time_event(5, lambda: fired.append("b"))
    center.delete_time_event(a)
    clock.advance(5)
    assert center.process_events(0) == 1
    assert fired == ["b"]


def test_cancel_after_firing_and_unknown_ids_are_noops(center, clock) -> None:
    fired: list[str] = []
    a = center.create_time_event(1, lambda: fired.append("a"))
    clock.advance(1)
    center.process_events(0)
    assert fired == ["a"]
    center.delete_time_event(a)       # already fired
    center.delete_time_event(a)       # twice
    center.delete_time_event(123456)  # never existed
    b = center.create_time_event(1, lambda: fired.append("b"))
    clock.advance(1)
    center.process_events(0)
    assert fired == ["a", "b"]
    assert b != a


def test_ten_thousand_timers(center, clock) -> None:
    rng = random.Random(3)
    fired: list[tuple[int, int]] = []
    expected = []
    cancelled = set()
    ids = []
    for i in range(10_000):
        d = rng.randrange(0, 5_000)
        tid = center.create_time_event(d, lambda d=d, i=i: fired.append((d, i)))
        ids.append(tid)
        expected.append((d, i))
    for i in rng.sample(range(10_000), 3_000):  # enough to trigger heap compaction
        center.delete_time_event(ids[i])
        cancelled.add(i)
    expected = sorted(e for e in expected if e[1] not in cancelled)
    total = 0
    for _ in range(50):
        clock.advance(100)
        total += center.process_events(0)
    assert total == 7_000
    assert fired == expected  # deadline order, creation order among equals


def test_heap_compaction_keeps_live_timers(center, clock) -> None:
    fired: list[int] = []
    ids = [center.create_time_event(10, lambda i=i: fired.append(i)) for i in range(1_000)]
    for tid in ids[:900]:
        center.delete_time_event(tid)
    assert len(center._heap) < 1_000  # compaction ran: cancelled entries are not kept forever
    clock.advance(10)
    center.process_events(0)
    assert fired == list(range(900, 1_000))


def test_timer_created_inside_callback_waits_for_next_turn(center, clock) -> None:
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        center.create_time_event(0, lambda: fired.append("zero-delay child"))
        center.create_time_event(10, lambda: fired.append("later child"))

    center.create_time_event(5, first)
    center.create_time_event(5, lambda: fired.append("sibling"))
    clock.advance(5)
    assert center.process_events(0) == 2
    assert fired == ["first", "sibling"]
    assert center.process_events(0) == 1  # the zero-delay child, one turn later
    assert fired[-1] == "zero-delay child"
    clock.advance(10)
    center.process_events(0)
    assert fired[-1] == "later child"


def test_self_rearming_timer_does_not_starve_the_turn(center, clock) -> None:
    count = [0]

    def again() -> None:
        count[0] += 1
        center.create_time_event(0, again)

    center.create_time_event(0, again)
    for _ in range(5):
        assert center.process_events(0) == 1
    assert count[0] == 5


def test_timer_deleted_inside_callback(center, clock) -> None:
    fired: list[str] = []
    victim = center.create_time_event(5, lambda: fired.append("victim"))
    center.create_time_event(3, lambda: center.delete_time_event(victim))
    center.create_time_event(5, lambda: fired.append("other"))
    clock.advance(5)
    # the killer runs first (earlier deadline), the victim is due in the same turn but must not run
    assert center.process_events(0) == 2
    assert fired == ["other"]


def test_timer_deleting_itself_is_harmless(center, clock) -> None:
    fired: list[str] = []
    box: list[int] = []
    box.append(center.create_time_event(1, lambda: (fired.append("x"), center.delete_time_event(box[0]))))
    clock.advance(1)
    center.process_events(0)
    clock.advance(100)
    center.process_events(0)
    assert fired == ["x"]


def test_negative_delay_is_due_now(center, clock) -> None:
    fired: list[int] = []
    center.create_time_event(-50, lambda: fired.append(1))
    assert center.process_events(0) == 1
    assert fired == [1]


def test_real_clock_timer_never_fires_early() -> None:
    clk = MonotonicClock()
    c = EventCenter(name="real")
    try:
        seen: list[int] = []
        start = clk.now_us()
        for d in (1, 300, 1_500, 2_000):
            c.create_time_event(d, lambda d=d: seen.append((d, clk.now_us() - start)))
        turns = 0
        while len(seen) < 4:
            c.process_events(None)  # blocks until the next timer: timeout comes from the heap
            turns += 1
        for d, elapsed in seen:
            assert elapsed >= d
        assert [d for d, _ in seen] == [1, 300, 1_500, 2_000]
        assert turns <= 8  # no spinning while waiting for a timer
    finally:
        c.close()


@pytest.mark.allow_error_log("timer callback .* raised")   # the test provokes this line
def test_raising_timer_is_logged_and_loop_continues(center, clock, caplog) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("timer boom")

    center.create_time_event(1, boom)
    center.create_time_event(1, lambda: fired.append("after"))
    clock.advance(1)
    with caplog.at_level("ERROR", logger="eventcenter"):
        assert center.process_events(0) == 2
    assert fired == ["after"]
    rec = [r for r in caplog.records if r.name == "eventcenter"]
    assert rec and rec[0].exc_info is not None and "timer boom" in str(rec[0].exc_info[1])
