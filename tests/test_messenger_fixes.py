"""Messenger fixes reported by other engineers, through two real messengers over loopback:
keepalive ack stamp, default send priority, peer number from the first message, the
server banner address, ms_connection_idle_timeout, replies sent on the worker, quiet mark_down.

Waits poll with a deadline that only turns a hang into a failure; nothing asserts on timing.
"""
from __future__ import annotations

import logging
import socket
import threading

import pytest
from test_messenger_loopback import Collector, MTest, make, wait_for

from msgr import Config, EntityAddr, EntityName, Policy
from msgr.wire import BANNER, Priority

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")
OSD = EntityName.TYPE_OSD


@pytest.fixture
def msgrs():
    made: list = []

    def _make(*args, **kw):
        ms, d = make(*args, **kw)
        made.append(ms)
        return ms, d
    yield _make
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


def test_get_last_keepalive_ack_changes_per_round_trip(msgrs):
    a, da = msgrs(EntityName.osd(0), 1000)
    b, db = msgrs(EntityName.osd(1), 2000)
    ca = a.connect_to(OSD, b.get_myaddr())
    assert ca.get_last_keepalive_ack() == 0.0
    stamps = []
    for _ in range(3):
        prev = ca.get_last_keepalive_ack()
        ca.send_keepalive()
        wait_for(lambda prev=prev: ca.get_last_keepalive_ack() != prev, what="KEEPALIVE2_ACK")
        stamps.append(ca.get_last_keepalive_ack())
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert a.get_loopback_connection().get_last_keepalive_ack() == 0.0


@pytest.mark.parametrize("me,expected", [(EntityName.osd(0), Priority.DEFAULT),
                                         (EntityName.mon("a"), Priority.HIGH)])
def test_priority_zero_gets_the_default_send_priority(msgrs, me, expected):
    a, da = msgrs(me, 1000)
    b, db = msgrs(EntityName.osd(1), 2000)
    assert a.get_default_send_priority() == expected
    ca = a.connect_to(OSD, b.get_myaddr())
    m = MTest(1)
    m.header.priority = 0
    ca.send_message(m)
    kept = MTest(2)
    kept.header.priority = Priority.LOW
    ca.send_message(kept)
    wait_for(lambda: len(db.msgs) == 2, what="two messages")
    got = {x.ident: x.header.priority for x in db.msgs}
    assert got == {1: expected, 2: Priority.LOW}
    a.set_default_send_priority(Priority.HIGHEST)
    local = MTest(3)
    local.header.priority = 0
    a.get_loopback_connection().send_message(local)
    wait_for(lambda: len(da.msgs) == 1, what="local delivery")
    assert da.msgs[0].header.priority == Priority.HIGHEST


def test_peer_name_number_learned_from_the_first_message(msgrs):
    a, da = msgrs(EntityName.osd(0), 1000)
    b, db = msgrs(EntityName.osd(7), 2000)
    ca = a.connect_to(OSD, b.get_myaddr())
    wait_for(ca.is_connected, what="connected")
    assert str(ca.peer_name) == "osd.-1"       # v1's handshake does not carry the number
    accepted = b.connect_to(OSD, a.get_myaddr())
    accepted.send_message(MTest(1))
    wait_for(lambda: len(da.msgs) == 1, what="a message from osd.7")
    assert str(ca.peer_name) == "osd.7"
    ca.send_message(MTest(2))
    wait_for(lambda: len(db.msgs) == 1, what="a message from osd.0")
    assert str(accepted.peer_name) == "osd.0"


def test_wildcard_bind_banner_claims_the_blank_address():
    """A messenger bound to 0.0.0.0 announces its own (blank) address, not the socket's local IP."""
    from msgr import Messenger
    ms = Messenger.create(EntityName.osd(3), nonce=4242, config=Config())
    ms.bind(EntityAddr.parse("v1:0.0.0.0:0"))
    ms.start()
    try:
        port = ms.get_myaddr().port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            got = b""
            while len(got) < len(BANNER) + 272:
                chunk = s.recv(4096)
                assert chunk, "server closed before its banner"
                got += chunk
        claimed = EntityAddr.decode_legacy(memoryview(got), len(BANNER))
        assert claimed.is_blank_ip() and claimed.port == port and claimed.nonce == 4242
        # a real client still connects to it (the blank claim is accepted when port and nonce match)
        c, dc = make(EntityName.osd(4), 5000)
        try:
            conn = c.connect_to(OSD, EntityAddr.parse(f"v1:127.0.0.1:{port}/4242"))
            wait_for(conn.is_connected, what="connected to a wildcard-bound messenger")
        finally:
            c.shutdown()
            c.wait()
    finally:
        ms.shutdown()
        ms.wait()


def test_idle_timeout_faults_a_silent_session_only(msgrs):
    cfg = Config(ms_connection_idle_timeout=0.3)
    a, da = msgrs(EntityName.client(1), 1000, cfg, Policy.lossy_client())
    b, db = msgrs(EntityName.osd(1), 2000, Config(ms_connection_idle_timeout=60), Policy.stateless_server())
    ca = a.connect_to(OSD, b.get_myaddr())
    ca.send_message(MTest(1))
    wait_for(lambda: len(db.msgs) == 1, what="first message")
    # keep it busy for well over the timeout: input keeps both sides alive
    for _ in range(8):
        prev = ca.get_last_keepalive_ack()
        ca.send_keepalive()
        wait_for(lambda prev=prev: ca.get_last_keepalive_ack() != prev, what="keepalive ack")
        threading.Event().wait(0.1)
    assert da.count("reset") == 0 and ca.is_connected()
    # then silence: the idle timeout ends the (lossy) session with a reset callback
    wait_for(lambda: da.count("reset") == 1, what="idle reset", timeout=20)
    assert not ca.is_connected() and "idle" in (ca.last_fault or "")


def test_fast_dispatch_reply_is_sent_from_the_worker(msgrs):
    """A reply sent from ms_fast_dispatch goes straight to the protocol (no external event)."""
    class Echo(Collector):
        def ms_can_fast_dispatch(self, msg):
            return isinstance(msg, MTest)

        def ms_fast_dispatch(self, msg):
            conn = msg.get_connection()
            posted = conn._center.external_pending() if hasattr(conn._center, "external_pending") else None
            conn.send_message(MTest(msg.ident + 1000))
            with self.lock:
                self.msgs.append(msg)
                self.threads.add(("direct", not conn._out_posted, posted))

    a, da = msgrs(EntityName.osd(0), 1000)
    b, _ = msgrs(EntityName.osd(1), 2000, bind=True)
    echo = Echo()
    b.add_dispatcher_head(echo)
    ca = a.connect_to(OSD, b.get_myaddr())
    for i in range(50):
        ca.send_message(MTest(i))
    wait_for(lambda: len(da.msgs) == 50, what="50 replies")
    assert [m.ident for m in da.msgs] == [i + 1000 for i in range(50)]
    assert all(direct for _k, direct, _p in echo.threads)


def test_mark_down_drops_unsent_messages_quietly(msgrs, caplog):
    """No warning per mark_down (Ceph logs nothing); the discarded hook still gets the messages."""
    a, da = msgrs(EntityName.osd(0), 1000)
    # nobody listens at this address: the messages stay queued
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    addr = EntityAddr.parse(f"v1:127.0.0.1:{s.getsockname()[1]}/99")
    s.close()
    reported = []
    da.ms_handle_discarded = lambda conn, msgs: reported.append(len(msgs))
    conn = a.connect_to(OSD, addr)
    for i in range(5):
        conn.send_message(MTest(i))
    wait_for(lambda: conn._proto._outq and len(conn._proto._outq) == 5, what="queued")
    with caplog.at_level(logging.DEBUG, logger="msgr.connection"):
        conn.mark_down()
        wait_for(lambda: conn._closed and reported, what="closed and reported")
    assert reported == [5]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "discarded" in r.getMessage()]
    assert [r for r in caplog.records if r.levelno == logging.DEBUG and "marked down with 5 unsent" in r.getMessage()]


def test_idle_tick_gives_a_quiet_session_its_small_receive_buffer_back(msgrs):
    """A session that streamed (64 KiB receive buffer) and went quiet shrinks it on the idle tick."""
    from msgr.protocol.protocol_v1 import RBUF_IDLE, RBUF_QUIET_US, RBUF_SIZE
    a, da = msgrs(EntityName.osd(0), 1000)
    b, db = msgrs(EntityName.osd(1), 2000)
    ca = a.connect_to(OSD, b.get_myaddr())
    ca.send_message(MTest(0))
    wait_for(lambda: len(db.msgs) == 1, what="first message")
    (srv,) = [c for c in b.connections() if not c._closed]
    sent = 1
    # bursts of small frames: a read fills the idle buffer and the protocol streams into 64 KiB
    while srv._proto._rsize < RBUF_SIZE:
        assert sent < 200_000, "the receive buffer never grew"
        for _ in range(2000):
            ca.send_message(MTest(sent, b"x" * 100))
            sent += 1
        wait_for(lambda sent=sent: len(db.msgs) == sent, what="a burst")
    threading.Event().wait(2 * RBUF_QUIET_US / 1e6)   # quiet for longer than the protocol asks

    def tick() -> int:
        assert srv._tick_timer is not None   # armed while the socket is up
        srv._center.delete_time_event(srv._tick_timer)
        srv._on_tick()
        return srv._proto._rsize
    assert srv._center.submit_to(tick) == RBUF_IDLE
    assert srv.is_connected() and srv._tick_timer is not None   # still up, the tick re-armed itself
    ca.send_message(MTest(sent))
    wait_for(lambda: len(db.msgs) == sent + 1, what="a message after the trim")
