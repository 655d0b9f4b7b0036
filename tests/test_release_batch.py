"""Receive throttles of fast-dispatched messages are given back per batch (msgr.message.release_throttles,
AsyncConnection._dispatch_all): the same totals as message by message, on every path, including a
fast dispatcher that raises, and never a message a dispatcher took over (msgr.aio's _hold_throttles)."""
from __future__ import annotations

import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgr import Message
from msgr.connection import AsyncConnection
from msgr.message import release_throttles
from msgr.throttle import Throttle


def _pools() -> tuple[list[Throttle], list]:
    ts = [Throttle(f"t{i}", 0) for i in range(3)]
    # shared pairs objects, as the receive path gives same-size messages of one read
    pairs = [None, (), ((ts[0], 1),), ((ts[0], 1), (ts[1], 100)), ((ts[2], 7),), ((ts[1], 100), (ts[2], 5))]
    return ts, pairs


@given(st.lists(st.integers(0, 5), max_size=60))
def test_release_throttles_gives_back_what_one_by_one_would(picks: list[int]) -> None:
    ts, pairs = _pools()
    msgs = []
    for i in picks:
        m = Message()
        m._throttled = pairs[i]
        msgs.append(m)
        for t, c in pairs[i] or ():
            assert t.try_get(c)
    release_throttles(msgs)
    assert [t.current for t in ts] == [0, 0, 0]
    assert not any(m._throttled for m in msgs)


class _Fast:
    def __init__(self, fail_at: int = -1, hold_at: int = -1) -> None:
        self.seen: list[tuple[int, int]] = []   # (index, dispatch throttle units held meanwhile)
        self.fail_at, self.hold_at = fail_at, hold_at
        self.held = None

    def ms_can_fast_dispatch(self, msg: Message) -> bool:
        return msg.header.tid >= 0

    def ms_fast_dispatch(self, msg: Message) -> None:
        i = msg.header.tid
        self.seen.append((i, _THROTTLE.current))
        if i == self.hold_at:
            self.held = msg._hold_throttles()
        if i == self.fail_at:
            raise RuntimeError("dispatcher bug")


_THROTTLE = Throttle("dispatch", 0)


def _conn(fast: _Fast, queued: list) -> types.SimpleNamespace:
    chain = types.SimpleNamespace(preprocessors=(), fast_dispatchers=(fast,))
    host = types.SimpleNamespace(dispatchers=chain, dispatch_queue=types.SimpleNamespace(enqueue=queued.append))
    perf = types.SimpleNamespace(msgr_fast_dispatched=0, fast_ns=0)
    return types.SimpleNamespace(_host=host, _perf=perf, _in_read=False)


def _batch(n: int, queued_at: int = -1) -> list[Message]:
    shared = ((_THROTTLE, 4096),)
    msgs = []
    for i in range(n):
        m = Message()
        m.header.tid = -1 if i == queued_at else i
        assert _THROTTLE.try_get(4096)
        m._throttled = shared
        msgs.append(m)
    return msgs


@pytest.mark.parametrize("fail_at", [-1, 0, 3, 7])
def test_to_dispatchers_gives_back_on_every_path(fail_at: int) -> None:
    fast, queued = _Fast(fail_at=fail_at), []
    msgs = _batch(8, queued_at=5)
    conn = _conn(fast, queued)
    if fail_at >= 0:
        with pytest.raises(RuntimeError):
            AsyncConnection._dispatch_all(conn, msgs, True)
    else:
        AsyncConnection._dispatch_all(conn, msgs, True)
    dispatched = [i for i, _ in fast.seen]
    # held while dispatching (Ceph's order: given back after dispatch), not before
    assert all(units > 0 for _, units in fast.seen)
    # what was dispatched (the one that raised included) is given back; the queued message and
    # those never reached keep theirs (the queue and the fault path own them, as before)
    keep = [m for m in msgs if m.header.tid not in dispatched]
    assert _THROTTLE.current == 4096 * len(keep)
    assert conn._perf.msgr_fast_dispatched == len(dispatched)
    for m in keep:
        m._release_throttles()
    assert _THROTTLE.current == 0


def test_to_dispatchers_leaves_a_message_taken_over() -> None:
    fast, queued = _Fast(hold_at=2), []
    msgs = _batch(4)
    AsyncConnection._dispatch_all(_conn(fast, queued), msgs, True)
    assert _THROTTLE.current == 4096          # message 2's units: its holder gives them back
    assert fast.held is not None
    fast.held()
    assert _THROTTLE.current == 0
