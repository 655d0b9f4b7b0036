"""Connection.wait_keepalive_ack: a KEEPALIVE2 round trip you can wait for, without polling.

Real messengers over loopback TCP; where the ack must not come, a FaultProxy holds the peer's bytes.
Waits have deadlines that only turn a hang into a failure; nothing asserts on timing.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from test_lossless_proxy import route_through

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.errors import WouldDeadlockError
from msgr.testing import Direction, FaultProxy

OSD = EntityName.TYPE_OSD


class MKaPing(Message):
    TYPE = 0x7E41


class Inbox(Dispatcher):
    def __init__(self) -> None:
        self.got: list[Message] = []
        self.cond = threading.Condition()
        self.in_dispatch: Future[object] = Future()

    def ms_dispatch(self, msg: Message) -> bool:
        if not self.in_dispatch.done():
            # a blocking wait on the dispatch thread would stop the dispatching it needs
            try:
                msg.get_connection().wait_keepalive_ack(timeout=0)
                self.in_dispatch.set_result("returned")
            except WouldDeadlockError as exc:
                self.in_dispatch.set_result(exc)
        with self.cond:
            self.got.append(msg)
            self.cond.notify_all()
        return True

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout=30), len(self.got)


@pytest.fixture
def pair():
    made: list[Messenger] = []

    def make(threads: int = 1) -> tuple[Messenger, Messenger, Inbox]:
        def one(name: EntityName, nonce: int) -> tuple[Messenger, Inbox]:
            ms = Messenger.create(name, nonce=nonce, config=Config(ms_async_op_threads=threads))
            ms.set_default_policy(Policy.lossless_peer())
            inbox = Inbox()
            ms.add_dispatcher_tail(inbox)
            ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
            ms.start()
            made.append(ms)
            return ms, inbox
        server, inbox = one(EntityName.osd(0), 5101)
        client, _ = one(EntityName.osd(1), 5102)
        return client, server, inbox
    yield make
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


def _wait_without_limit(conn, after: float) -> bool:
    """wait_keepalive_ack(after) with no timeout, in a thread: only the worker's wake can end it (a
    deadline here just turns a missing wake into a failure instead of a hang)."""
    fut: Future[bool] = Future()
    threading.Thread(target=lambda: fut.set_result(conn.wait_keepalive_ack(after=after)), daemon=True).start()
    return fut.result(timeout=30)


def _connected(client: Messenger, server: Messenger, inbox: Inbox):
    conn = client.connect_to(OSD, server.get_myaddr())
    conn.send_message(MKaPing())
    inbox.wait_for(1)
    return conn


@pytest.mark.parametrize("threads", [1, 3])
def test_wait_returns_true_once_a_newer_ack_arrived(pair, threads) -> None:
    client, server, inbox = pair(threads)
    conn = _connected(client, server, inbox)
    stamps = [conn.get_last_keepalive_ack()]
    assert stamps[0] == 0.0
    for _ in range(3):
        before = conn.get_last_keepalive_ack()
        conn.send_keepalive()
        assert _wait_without_limit(conn, before) is True
        stamps.append(conn.get_last_keepalive_ack())
    assert stamps == sorted(set(stamps)), stamps      # each ack echoes a later keepalive
    # an ack already newer than `after` answers at once, also with no time left
    assert conn.wait_keepalive_ack(after=stamps[1], timeout=0) is True
    assert conn.wait_keepalive_ack(after=stamps[-1], timeout=0) is False


@pytest.fixture
def through_proxy(pair, monkeypatch):
    """A connected client connection whose bytes pass a FaultProxy (to hold the peer's acks back)."""
    client, server, inbox = pair()
    target = server.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=11).start()
    route_through(monkeypatch, target, proxy)
    try:
        yield _connected(client, server, inbox), proxy
    finally:
        proxy.stop()


def test_no_ack_times_out_then_the_held_ack_is_seen(through_proxy) -> None:
    conn, proxy = through_proxy
    proxy.stall(3_000, Direction.TO_CLIENT)      # the peer's answers are held back
    before = conn.get_last_keepalive_ack()
    conn.send_keepalive()
    assert conn.wait_keepalive_ack(after=before, timeout=0.3) is False
    assert conn.get_last_keepalive_ack() == before and conn.is_connected()
    # the stall ends: the same keepalive's ack arrives and wakes a new wait
    assert _wait_without_limit(conn, before) is True
    assert conn.get_last_keepalive_ack() > before


def test_mark_down_wakes_a_waiter_with_false(through_proxy) -> None:
    conn, proxy = through_proxy
    proxy.stall(60_000, Direction.TO_CLIENT)     # no ack can come before the mark_down
    conn.send_keepalive()
    result: Future[bool] = Future()
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        result.set_result(conn.wait_keepalive_ack(timeout=None))   # no limit: only mark_down ends it
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    waiting.wait(10)
    conn.mark_down()
    assert result.result(timeout=30) is False
    t.join(10)
    assert not t.is_alive()
    assert conn.wait_keepalive_ack(timeout=None) is False   # after the end: at once


def test_waiting_on_the_dispatch_thread_raises(pair) -> None:
    client, server, inbox = pair()
    _connected(client, server, inbox)
    assert isinstance(inbox.in_dispatch.result(timeout=30), WouldDeadlockError)


def test_a_keepalive_to_ourselves_is_acked_at_once(pair) -> None:
    client, _server, _inbox = pair()
    me = client.connect_to(OSD, client.get_myaddr())
    before = me.get_last_keepalive_ack()
    me.send_keepalive()
    assert me.wait_keepalive_ack(after=before, timeout=30) is True
    assert me.get_last_keepalive_ack() > before
