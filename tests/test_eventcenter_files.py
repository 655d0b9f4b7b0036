"""File events on socketpairs: readiness, masks, deletion from callbacks, closed fds."""
from __future__ import annotations

import socket

import pytest

from eventcenter import EVENT_READABLE, EVENT_WRITABLE, EventCenter
from eventcenter.clock import FakeClock

R, W = EVENT_READABLE, EVENT_WRITABLE


@pytest.fixture
def center():
    c = EventCenter(name="f", clock=FakeClock())
    yield c
    c.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def fill(sock: socket.socket) -> None:
    """Write until the kernel buffer is full, so the socket is not writable."""
    chunk = b"x" * 65536
    try:
        while True:
            sock.send(chunk)
    except BlockingIOError:
        pass


def drain(sock: socket.socket) -> int:
    n = 0
    try:
        while True:
            got = sock.recv(1 << 20)
            if not got:
                return n
            n += len(got)
    except BlockingIOError:
        return n


def test_readable_fires_only_when_data_arrives(center, pair) -> None:
    a, b = pair
    seen: list[tuple[int, int, bytes]] = []
    center.create_file_event(a.fileno(), R, lambda fd, m: seen.append((fd, m, a.recv(100))))
    assert center.process_events(0) == 0
    b.send(b"ping")
    assert center.process_events(0) == 1
    assert seen == [(a.fileno(), R, b"ping")]
    assert center.process_events(0) == 0  # drained: level-triggered does not re-fire


def test_level_triggered_refires_until_drained(center, pair) -> None:
    a, b = pair
    got: list[bytes] = []
    center.create_file_event(a.fileno(), R, lambda fd, m: got.append(a.recv(2)))
    b.send(b"abcdef")
    for _ in range(3):
        assert center.process_events(0) == 1  # a callback may read once and return
    assert b"".join(got) == b"abcdef"
    assert center.process_events(0) == 0


def test_writable_fires_and_stops_when_buffer_full(center, pair) -> None:
    a, b = pair
    seen: list[int] = []
    center.create_file_event(a.fileno(), W, lambda fd, m: seen.append(m))
    assert center.process_events(0) == 1
    assert seen == [W]
    fill(a)
    assert center.process_events(0) == 0
    drain(b)
    assert center.process_events(0) == 1


def test_masks_add_and_remove_independently(center, pair) -> None:
    a, b = pair
    calls: list[tuple[str, int]] = []
    fd = a.fileno()
    center.create_file_event(fd, R, lambda f, m: (calls.append(("r", m)), a.recv(100)))
    center.create_file_event(fd, W, lambda f, m: calls.append(("w", m)))
    b.send(b"x")
    assert center.process_events(0) == 2
    assert calls == [("r", R), ("w", W)]  # read before write, each with its own bit
    calls.clear()
    center.delete_file_event(fd, W)
    b.send(b"y")
    assert center.process_events(0) == 1
    assert calls == [("r", R)]
    calls.clear()
    center.delete_file_event(fd, R)
    center.create_file_event(fd, W, lambda f, m: calls.append(("w2", m)))
    b.send(b"z")
    assert center.process_events(0) == 1
    assert calls == [("w2", W)]  # READABLE really is gone, even with data waiting
    center.delete_file_event(fd, R | W)
    assert center.process_events(0) == 0


def test_one_callback_for_both_bits_runs_once(center, pair) -> None:
    a, b = pair
    calls: list[int] = []
    center.create_file_event(a.fileno(), R | W, lambda f, m: (calls.append(m), a.recv(10)))
    b.send(b"x")
    assert center.process_events(0) == 1
    assert calls == [R | W]


def test_replacing_a_callback(center, pair) -> None:
    a, b = pair
    calls: list[str] = []
    center.create_file_event(a.fileno(), R, lambda f, m: (calls.append("old"), a.recv(10)))
    center.create_file_event(a.fileno(), R, lambda f, m: (calls.append("new"), a.recv(10)))
    b.send(b"x")
    center.process_events(0)
    assert calls == ["new"]


def test_delete_unknown_fd_or_unset_bits_is_noop(center, pair) -> None:
    a, _ = pair
    center.delete_file_event(9999, R | W)
    center.create_file_event(a.fileno(), R, lambda f, m: None)
    center.delete_file_event(a.fileno(), W)  # not registered: nothing changes
    assert a.fileno() in center._files


def test_bad_mask_is_rejected(center, pair) -> None:
    a, _ = pair
    with pytest.raises(ValueError):
        center.create_file_event(a.fileno(), 0, lambda f, m: None)
    with pytest.raises(ValueError):
        center.create_file_event(a.fileno(), 4, lambda f, m: None)


def test_deleting_fd_inside_its_own_read_callback_skips_its_write_callback(center, pair) -> None:
    a, b = pair
    calls: list[str] = []
    fd = a.fileno()

    def on_read(f: int, m: int) -> None:
        calls.append("r")
        center.delete_file_event(f, R | W)

    center.create_file_event(fd, R, on_read)
    center.create_file_event(fd, W, lambda f, m: calls.append("w"))
    b.send(b"x")
    assert center.process_events(0) == 1
    assert calls == ["r"]
    assert center.process_events(0) == 0  # really unregistered: data is still unread


def test_callback_deleting_another_fired_fd(center) -> None:
    s1 = socket.socketpair()
    s2 = socket.socketpair()
    try:
        calls: list[int] = []
        fds = [s1[0].fileno(), s2[0].fileno()]

        def make(me: int, other: int):
            def cb(f: int, m: int) -> None:
                calls.append(me)
                center.delete_file_event(other, R)
            return cb

        center.create_file_event(fds[0], R, make(fds[0], fds[1]))
        center.create_file_event(fds[1], R, make(fds[1], fds[0]))
        s1[1].send(b"x")
        s2[1].send(b"x")
        assert center.process_events(0) == 1  # whichever ran first removed the other
        assert len(calls) == 1
    finally:
        for s in (*s1, *s2):
            s.close()


def test_closing_a_registered_fd(center) -> None:
    a, b = socket.socketpair()
    calls: list[str] = []
    fd = a.fileno()
    center.create_file_event(fd, R, lambda f, m: calls.append("old"))
    a.close()
    b.close()
    # the kernel forgot the closed fd: the loop neither fails nor spins
    assert center.process_events(0) == 0
    center.delete_file_event(fd, R)  # no error on the closed fd
    assert fd not in center._files
    # the number is reused by a new socket: registering it works
    c, d = socket.socketpair()
    try:
        assert fd in (c.fileno(), d.fileno())
        mine = c if c.fileno() == fd else d
        other = d if mine is c else c
        center.create_file_event(fd, R, lambda f, m: (calls.append("new"), mine.recv(10)))
        other.send(b"x")
        assert center.process_events(0) == 1
        assert calls == ["new"]
    finally:
        c.close()
        d.close()


def test_closed_then_reused_without_delete_is_reregistered(center) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    calls: list[str] = []
    center.create_file_event(fd, R, lambda f, m: calls.append("old"))
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        mine = c if c.fileno() == fd else d
        other = d if mine is c else c
        assert mine.fileno() == fd
        # same mask as the stale entry: the kernel must still be told
        center.create_file_event(fd, R, lambda f, m: (calls.append("new"), mine.recv(10)))
        other.send(b"x")
        assert center.process_events(0) == 1
        assert calls == ["new"]
    finally:
        c.close()
        d.close()


def test_peer_close_reports_readable_and_writable(center, pair) -> None:
    a, b = pair
    calls: list[int] = []
    center.create_file_event(a.fileno(), R, lambda f, m: calls.append(len(a.recv(10))))
    b.close()
    assert center.process_events(0) == 1
    assert calls == [0]  # EOF reaches the read callback


@pytest.mark.allow_error_log("file callback .* raised")   # the test provokes this line
def test_raising_file_callback_is_logged_and_loop_continues(center, pair, caplog) -> None:
    a, b = pair
    calls: list[str] = []

    def boom(f: int, m: int) -> None:
        a.recv(10)
        raise ValueError("file boom")

    center.create_file_event(a.fileno(), R, boom)
    center.create_file_event(a.fileno(), W, lambda f, m: calls.append("w"))
    b.send(b"x")
    with caplog.at_level("ERROR", logger="eventcenter"):
        assert center.process_events(0) == 2
    assert calls == ["w"]
    assert any(r.exc_info and "file boom" in str(r.exc_info[1]) for r in caplog.records)


def test_timeout_comes_from_nearest_timer_when_idle() -> None:
    """process_events(None) with no fds ready returns when the timer is due, not before."""
    c = EventCenter(name="idle")
    try:
        fired: list[int] = []
        c.create_time_event(2_000, lambda: fired.append(1))
        n = 0
        turns = 0
        while not fired:
            n += c.process_events(None)
            turns += 1
        assert n == 1
        assert turns <= 3
    finally:
        c.close()
