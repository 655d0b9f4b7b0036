"""Delivery you can wait for: Connection.flush and Messenger.shutdown(linger).

Sans-IO checks of the bookkeeping (FlushMarks over an OutQueue), then real messengers over loopback
TCP, through a FaultProxy where a flush must wait for an ack that has not come. Waits poll with a
deadline that only turns a hang into a failure; nothing asserts on timing.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
from test_lossless_proxy import route_through
from test_messenger_loopback import Collector, MTest, wait_for

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.errors import WouldDeadlockError
from msgr.protocol.outq import FlushMarks, OutQueue
from msgr.testing import FaultProxy
from msgr.wire import Priority

OSD = EntityName.TYPE_OSD


# --- sans-IO: FlushMarks ---------------------------------------------------------------------------

def _msg(prio: int = Priority.DEFAULT) -> Message:
    m = MTest(0)
    m.header.priority = prio
    return m


def _write_all(q: OutQueue, lossless: bool = True) -> list[Message]:
    """What ProtocolV1 does on a write: seqs in write order, into the sent list when lossless."""
    msgs = q.take_all()
    for m in msgs:
        q.out_seq += 1
        m.header.seq = q.out_seq
    if lossless:
        q.sent.extend(msgs)
    return msgs


def test_lossless_mark_completes_on_the_ack_of_the_last_covered_message() -> None:
    q, marks = OutQueue(), FlushMarks()
    for _ in range(3):
        q.enqueue(_msg())
    marks.add("f")
    assert marks.progress(q, False, 0, 0) == []          # still queued: no target yet
    _write_all(q)
    q.enqueue(_msg())                                    # queued before the owner saw it drained
    assert marks.progress(q, False, 0, 0) == []          # the target is fixed only once drained
    _write_all(q)
    assert marks.progress(q, False, 0, 0) == []          # target seq 4: written, not acked
    q.ack(3)
    assert marks.progress(q, False, 0, 0) == []          # the 4th left with them: waited for too
    q.ack(4)
    assert marks.progress(q, False, 0, 0) == ["f"]
    assert not marks


def test_lossless_mark_target_ignores_later_messages_once_drained() -> None:
    q, marks = OutQueue(), FlushMarks()
    q.enqueue(_msg())
    q.enqueue(_msg())
    _write_all(q)
    marks.add("f")
    assert marks.progress(q, False, 0, 0) == []          # target = seq 2
    q.enqueue(_msg())
    _write_all(q)                                        # seq 3, after the flush
    q.ack(2)
    assert marks.progress(q, False, 0, 0) == ["f"]


def test_lossless_mark_waits_through_requeue_and_counts_what_the_peer_had() -> None:
    q, marks = OutQueue(), FlushMarks()
    for _ in range(4):
        q.enqueue(_msg(Priority.LOW))
    q.enqueue(_msg(Priority.HIGHEST))                    # a fresh HIGHEST one behind the requeued
    _write_all(q)
    marks.add("f")
    assert marks.progress(q, False, 0, 0) == []
    q.ack(1)
    q.requeue_sent()                                     # a fault: seqs 2..5 back to the front
    assert len(q) == 4 and marks.progress(q, False, 0, 0) == []
    assert q.discard_requeued_up_to(3)                   # the peer had up to 3
    assert marks.progress(q, False, 0, 0) == []
    _write_all(q)                                        # 4 and 5 again, same seqs
    assert [m.header.seq for m in q.sent] == [4, 5]
    q.ack(5)
    assert marks.progress(q, False, 0, 0) == ["f"]


def test_lossy_mark_counts_written_bytes() -> None:
    q, marks = OutQueue(), FlushMarks()
    q.enqueue(_msg())
    marks.add("f")
    assert marks.progress(q, True, 100, 0) == []         # queued: nothing taken yet
    _write_all(q, lossless=False)
    assert marks.progress(q, True, 300, 150) == []       # target 300 bytes, 150 written
    assert marks.progress(q, True, 900, 600) == ["f"]    # more taken since; the first 300 are out


def test_fail_all_and_remove() -> None:
    q, marks = OutQueue(), FlushMarks()
    q.enqueue(_msg())
    marks.add("a")
    marks.add("b")
    marks.remove("a")
    assert len(marks) == 1
    assert marks.fail_all() == ["b"] and not marks


def test_settled_ignores_fresh_highest_messages() -> None:
    q = OutQueue()
    q.enqueue(_msg(Priority.HIGHEST))                    # seq 0: never written, not covered by seq 0
    assert q.settled(0)
    _write_all(q)
    assert not q.settled(1) and q.settled(0)


# --- real messengers --------------------------------------------------------------------------------

class Discards(Collector):
    def __init__(self) -> None:
        super().__init__()
        self.discarded: list = []

    def ms_handle_discarded(self, conn, messages) -> None:
        self.discarded.extend(messages)


@pytest.fixture
def messengers():
    made: list = []

    def make(name: EntityName, nonce: int, policy: Policy, bind: bool = True, **cfg):
        ms = Messenger.create(name, nonce=nonce,
                              config=Config(ms_initial_backoff=0.02, ms_max_backoff=0.2, **cfg))
        ms.set_default_policy(policy)
        d = Discards()
        ms.add_dispatcher_tail(d)
        if bind:
            ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
        ms.start()
        made.append(ms)
        return ms, d
    yield make
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


POLICIES = {
    "lossy": (Policy.stateless_server, Policy.lossy_client),
    "lossless": (Policy.lossless_peer, Policy.lossless_peer),
}


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_shutdown_with_linger_delivers_everything_sent(messengers, kind) -> None:
    """The reported bug: 1000 send_message then shutdown()+wait() delivered 0; with linger, all."""
    server_policy, client_policy = POLICIES[kind]
    server, ds = messengers(EntityName.osd(0), 101, server_policy())
    client = Messenger.create(EntityName.client(7), nonce=102)
    client.set_default_policy(client_policy())
    client.start()
    conn = client.connect_to(OSD, server.get_myaddr())
    for i in range(1000):
        conn.send_message(MTest(i))
    client.shutdown(linger=5)
    client.wait()
    assert not conn.is_connected()
    wait_for(lambda: len(ds.msgs) >= 1000, what=f"1000 messages (have {len(ds.msgs)})")
    assert sorted(m.ident for m in ds.msgs) == list(range(1000))


def test_shutdown_without_linger_logs_what_it_dropped(messengers, caplog) -> None:
    """Ceph's drop-at-once stays the default, but no longer silently: wait() says how many at INFO."""
    client, _ = messengers(EntityName.client(8), 103, Policy.lossless_client(), bind=False)
    with socket_nobody_listens_on() as addr:
        conn = client.connect_to(OSD, addr)
        for i in range(1000):
            conn.send_message(MTest(i))
        with caplog.at_level(logging.INFO, logger="msgr"):
            client.shutdown()
            client.wait()
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and "shutdown dropped" in r.getMessage()]
    assert lines and "dropped 1000 unsent message(s)" in lines[0], caplog.text


class socket_nobody_listens_on:
    """An address with a bound, non-listening socket behind it: connects are refused."""

    def __enter__(self) -> EntityAddr:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return EntityAddr.parse(f"v1:127.0.0.1:{self.sock.getsockname()[1]}/99")

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_flush_returns_once_written_or_acked(messengers, kind) -> None:
    server_policy, client_policy = POLICIES[kind]
    server, ds = messengers(EntityName.osd(0), 111, server_policy())
    client, _ = messengers(EntityName.client(9), 112, client_policy(), bind=False)
    conn = client.connect_to(OSD, server.get_myaddr())
    for i in range(500):
        conn.send_message(MTest(i, data=b"x" * 1000))
    assert conn.flush(timeout=30)
    if kind == "lossless":
        assert not conn._proto.outq.sent, "flush returned before the peer acked everything"
    assert conn.flush(timeout=30)                        # nothing new: at once
    conn.mark_down()                                     # lossy: written is enough to arrive
    wait_for(lambda: len(ds.msgs) >= 500, what=f"500 messages (have {len(ds.msgs)})")


def test_lossless_flush_waits_for_the_ack_not_the_write(messengers, monkeypatch) -> None:
    server, ds = messengers(EntityName.osd(0), 121, Policy.lossless_peer())
    target = server.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=3).start()
    route_through(monkeypatch, target, proxy)
    try:
        client, _ = messengers(EntityName.osd(1), 122, Policy.lossless_peer())
        conn = client.connect_to(OSD, target)
        conn.send_message(MTest(0))
        assert conn.flush(timeout=30)
        from msgr.testing import Direction
        proxy.stall(60_000, Direction.TO_CLIENT)           # the peer's ACKs do not come back
        for i in range(1, 11):
            conn.send_message(MTest(i))
        wait_for(lambda: len(ds.msgs) >= 11, what="the messages to arrive")
        assert conn.flush(timeout=0.3) is False            # written and received, never acked
        wait_for(lambda: not conn._flushes, what="the timed-out flush to be forgotten")
        fut = conn.flush_future()
        proxy.reset_all()                                  # reconnect: the SEQ exchange acks them
        assert fut.result(timeout=30) is True
    finally:
        proxy.stop()
    assert sorted(m.ident for m in ds.msgs) == list(range(11))


def test_flush_waits_through_a_lossless_reconnect(messengers, monkeypatch) -> None:
    server, ds = messengers(EntityName.osd(0), 131, Policy.lossless_peer())
    target = server.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=5).start()
    route_through(monkeypatch, target, proxy)
    try:
        client, _ = messengers(EntityName.osd(1), 132, Policy.lossless_peer())
        conn = client.connect_to(OSD, target)
        conn.send_message(MTest(0))
        assert conn.flush(timeout=30)
        proxy.stall(60_000)                                # nothing moves either way
        for i in range(1, 201):
            conn.send_message(MTest(i, data=b"y" * 500))
        result: list = []
        waiter = threading.Thread(target=lambda: result.append(conn.flush(timeout=60)))
        waiter.start()
        time.sleep(0.05)
        assert not result, "flush returned while nothing could be acked"
        proxy.reset_all()                                  # the stalled socket dies; reconnect
        waiter.join(60)
        assert result == [True]
        assert conn._fault_count >= 1, "no reconnect happened"
    finally:
        proxy.stop()
    wait_for(lambda: len(ds.msgs) >= 201, what=f"201 messages (have {len(ds.msgs)})")
    assert sorted(m.ident for m in ds.msgs) == list(range(201))


def test_flush_times_out_when_nothing_can_be_sent(messengers) -> None:
    client, _ = messengers(EntityName.osd(2), 141, Policy.lossless_peer())
    with socket_nobody_listens_on() as addr:
        conn = client.connect_to(OSD, addr)
        conn.send_message(MTest(1))
        assert conn.flush(timeout=0.2) is False
        fut = conn.flush_future()
        assert fut.cancel()
        wait_for(lambda: not conn._flushes, what="the cancelled flush to be forgotten")


def test_flush_returns_false_when_the_session_ends_first(messengers) -> None:
    """Lossy: the peer goes away (its messenger shuts down) while messages wait: False, discarded."""
    client, dc = messengers(EntityName.client(3), 151, Policy.lossy_client(), bind=False)
    with socket_nobody_listens_on() as addr:
        conn = client.connect_to(OSD, addr)
        for i in range(5):
            conn.send_message(MTest(i))
        fut = conn.flush_future()
        time.sleep(0.05)
        assert not fut.done()
        conn.mark_down()
        assert fut.result(timeout=30) is False
    assert conn.flush(timeout=1) is False                # a closed connection flushes nothing


def test_lossy_flush_returns_false_when_the_peer_goes_away(messengers, monkeypatch) -> None:
    """Lossy: the socket is full (the path stalls) when the connection dies: the session ends."""
    server, ds = messengers(EntityName.osd(0), 155, Policy.stateless_server())
    target = server.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=4).start()
    route_through(monkeypatch, target, proxy)
    try:
        client, dc = messengers(EntityName.client(4), 156, Policy.lossy_client(), bind=False)
        conn = client.connect_to(OSD, target)
        conn.send_message(MTest(0))
        assert conn.flush(timeout=30)
        proxy.stall(60_000)
        for i in range(1, 21):
            conn.send_message(MTest(i, data=bytes(1 << 20)))
        fut = conn.flush_future()
        time.sleep(0.1)
        assert not fut.done(), "20 MiB cannot have been written through a stalled path"
        proxy.reset_all()
        assert fut.result(timeout=30) is False
        assert not conn.is_connected()
    finally:
        proxy.stop()


def test_flush_returns_false_when_the_peer_resets_the_session(messengers) -> None:
    """Lossless: the peer restarts (same address, no memory of the session); the reconnect meets
    RESETSESSION, the queue is discarded and the flush says False."""
    server, ds = messengers(EntityName.osd(0), 161, Policy.lossless_peer())
    client, dc = messengers(EntityName.osd(1), 162, Policy.lossless_peer())
    conn = client.connect_to(OSD, server.get_myaddr())
    conn.send_message(MTest(0))
    assert conn.flush(timeout=30)
    server.shutdown()                                  # the peer goes away ...
    server.wait()
    for i in range(1, 6):
        conn.send_message(MTest(i))
    fut = conn.flush_future()
    time.sleep(0.05)
    assert not fut.done()
    server.start()                                     # ... and comes back without the session
    assert fut.result(timeout=30) is False
    wait_for(lambda: len(dc.discarded) >= 5, what="the discards")
    assert sorted(m.ident for m in dc.discarded) == [1, 2, 3, 4, 5]


def test_loopback_flush_waits_for_dispatch(messengers) -> None:
    ms, d = messengers(EntityName.osd(5), 171, Policy.lossless_peer())
    d.block.clear()
    lo = ms.connect_to(OSD, ms.get_myaddr())
    lo.send_message(MTest(1))
    fut = lo.flush_future()
    time.sleep(0.05)
    assert not fut.done()
    d.block.set()
    assert fut.result(timeout=30) is True and len(d.msgs) == 1
    assert lo.flush(timeout=5)


class Blocker(Dispatcher):
    """Calls a blocking API from inside a callback (the dispatch thread or, fast, the worker)."""

    def __init__(self, fast: bool, call) -> None:
        self.fast = fast
        self.call = call
        self.errors: list = []

    def ms_can_fast_dispatch(self, msg) -> bool:
        return self.fast

    def _run(self, msg) -> None:
        try:
            self.call(msg)
        except Exception as exc:   # the test inspects it
            self.errors.append(exc)

    def ms_fast_dispatch(self, msg) -> None:
        self._run(msg)

    def ms_dispatch(self, msg) -> bool:
        self._run(msg)
        return True


@pytest.mark.parametrize("fast", [False, True], ids=["dispatch-thread", "worker"])
@pytest.mark.parametrize("what", ["flush", "shutdown"])
def test_blocking_calls_refuse_messenger_threads(messengers, fast, what) -> None:
    server, _ = messengers(EntityName.osd(0), 181 + fast, Policy.lossless_peer())
    if what == "flush":
        blocker = Blocker(fast, lambda msg: msg.get_connection().flush(timeout=5))
    else:
        blocker = Blocker(fast, lambda msg: server.shutdown(linger=5))
    server.add_dispatcher_head(blocker)
    client, _ = messengers(EntityName.osd(1), 191 + fast, Policy.lossless_peer())
    client.connect_to(OSD, server.get_myaddr()).send_message(MTest(2))
    wait_for(lambda: blocker.errors, what="the callback to run")
    err = blocker.errors[0]
    assert isinstance(err, WouldDeadlockError) and isinstance(err, RuntimeError)
    assert "cannot be called on one of them" in str(err)


def test_flush_future_works_inside_a_worker_callback(messengers) -> None:
    """The non-blocking form is the one to use on a messenger thread."""
    futs: list = []

    class FastFlusher(Dispatcher):
        def ms_can_fast_dispatch(self, msg) -> bool:
            return True

        def ms_fast_dispatch(self, msg) -> None:
            conn = msg.get_connection()
            conn.send_message(MTest(msg.ident + 100))
            futs.append(conn.flush_future())

    server, _ = messengers(EntityName.osd(0), 195, Policy.lossless_peer())
    server.add_dispatcher_head(FastFlusher())
    client, dc = messengers(EntityName.osd(1), 196, Policy.lossless_peer())
    client.connect_to(OSD, server.get_myaddr()).send_message(MTest(1))
    wait_for(lambda: futs, what="the callback")
    assert futs[0].result(timeout=30) is True
    wait_for(lambda: [m.ident for m in dc.msgs] == [101], what="the reply")
