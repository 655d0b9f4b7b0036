"""Two messengers in one process over loopback TCP, through the public API only.

No timing asserts: every wait is "until this happens" with a generous
deadline that only turns a hang into a failure.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

MiB = 1 << 20


class MTest(Message):
    """A test message: front starts with (id u64, kind u32); middle/data as given."""
    TYPE = 0x7E01

    def __init__(self, ident: int = 0, front_extra: bytes = b"", middle: bytes = b"", data: bytes = b"") -> None:
        super().__init__()
        self.ident = ident
        self.front = struct.pack("<Q", ident) + front_extra
        self.middle = middle
        self.data = data

    def decode_payload(self) -> None:
        self.ident = struct.unpack_from("<Q", self.front)[0]


def wait_for(pred, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred`` until true; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class Collector(Dispatcher):
    def __init__(self, fast: bool = False) -> None:
        self.msgs: list = []
        self.events: list = []
        self.threads: set = set()
        self.fast = fast
        self.lock = threading.Lock()
        self.block = threading.Event()
        self.block.set()

    def ms_can_fast_dispatch(self, msg):
        return self.fast and isinstance(msg, MTest) and msg.ident % 2 == 0

    def ms_fast_dispatch(self, msg):
        with self.lock:
            self.msgs.append(msg)
            self.threads.add(("fast", threading.current_thread().name))

    def ms_dispatch(self, msg):
        self.block.wait()
        with self.lock:
            self.msgs.append(msg)
            self.threads.add(("queued", threading.current_thread().name))
        return True

    def ms_handle_connect(self, conn):
        self.events.append(("connect", conn))

    def ms_handle_accept(self, conn):
        self.events.append(("accept", conn))

    def ms_handle_reset(self, conn):
        self.events.append(("reset", conn))
        return True

    def ms_handle_remote_reset(self, conn):
        self.events.append(("remote_reset", conn))

    def ms_handle_refused(self, conn):
        self.events.append(("refused", conn))
        return True

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)


def make(name: EntityName, nonce: int, cfg: Config | None = None, policy: Policy | None = None,
         fast: bool = False, bind: bool = True):
    ms = Messenger.create(name, nonce=nonce, config=cfg or Config())
    ms.set_default_policy(policy or Policy.lossless_peer())
    d = Collector(fast)
    ms.add_dispatcher_tail(d)
    if bind:
        ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    return ms, d


@pytest.fixture
def pair(request):
    opts = getattr(request, "param", {})
    cfg = Config(**opts.get("cfg", {}))
    a, da = make(EntityName.osd(0), 1000, cfg.copy(), opts.get("policy_a"), opts.get("fast", False))
    b, db = make(EntityName.osd(1), 2000, cfg.copy(), opts.get("policy_b"), opts.get("fast", False))
    yield a, da, b, db
    for ms in (a, b):
        ms.shutdown()
    for ms in (a, b):
        ms.wait()


def test_handshake_both_ways(pair):
    a, da, b, db = pair
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    wait_for(ca.is_connected, what="a -> b connected")
    wait_for(lambda: da.count("connect") == 1 and db.count("accept") == 1, what="connect/accept callbacks")
    assert da.events[0][1] is ca
    accepted = db.events[0][1]
    assert a.connect_to(EntityName.TYPE_OSD, b.get_myaddr()) is ca   # one object per session
    # the other way round is the same session: b finds a's registered address
    assert b.connect_to(EntityName.TYPE_OSD, a.get_myaddr()) is accepted
    # the accept callback comes with the server's reply, before the peer's SEQ ack opens the session
    wait_for(accepted.is_connected, what="accepted session open")
    assert accepted.get_peer_addr() == a.get_myaddr()
    assert ca.peer_type == EntityName.TYPE_OSD and accepted.peer_type == EntityName.TYPE_OSD
    assert str(accepted.peer_name).startswith("osd.")
    assert ca.features and ca.features == accepted.features
    assert ca.get_peer_addr() == b.get_myaddr()
    ca.send_message(MTest(1))
    accepted.send_message(MTest(2))
    wait_for(lambda: len(da.msgs) == 1 and len(db.msgs) == 1, what="one message each way")
    assert db.msgs[0].ident == 1 and da.msgs[0].ident == 2
    assert da.msgs[0].get_connection() is ca and db.msgs[0].get_connection() is accepted
    assert str(db.msgs[0].get_source()) == "osd.0"
    dump = a.perf_dump()
    assert dump["AsyncMessenger"]["msgr_send_messages"] == 1
    assert dump["AsyncMessenger"]["msgr_created_connections"] == 1


def test_simultaneous_connect_ends_with_one_session(pair):
    a, da, b, db = pair
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    cb = b.connect_to(EntityName.TYPE_OSD, a.get_myaddr())
    ca.send_message(MTest(1))
    cb.send_message(MTest(2))
    wait_for(lambda: len(da.msgs) == 1 and len(db.msgs) == 1, what="one message each way")
    assert db.msgs[0].ident == 1 and da.msgs[0].ident == 2
    # the race leaves one registered session per side, and connect_to still hands out the same objects
    wait_for(lambda: len(a.connections()) == 1 and len(b.connections()) == 1, what="one connection per side")
    assert a.connect_to(EntityName.TYPE_OSD, b.get_myaddr()) is ca
    assert b.connect_to(EntityName.TYPE_OSD, a.get_myaddr()) is cb
    ca.send_message(MTest(3))
    cb.send_message(MTest(4))
    wait_for(lambda: len(da.msgs) == 2 and len(db.msgs) == 2, what="second message each way")


SIZES = [0, 1, 17, 512, 4096, 65536, 300_000]


def _payload(size: int, cache: dict) -> bytes:
    b = cache.get(size)
    if b is None:
        b = cache[size] = os.urandom(size)
    return b


@pytest.mark.parametrize("pair", [{"cfg": {"ms_crc_data": True}},
                                  {"cfg": {"ms_crc_data": False, "ms_crc_header": False}}],
                         indirect=True, ids=["crc", "nocrc"])
def test_ten_thousand_messages_each_way_in_order(pair):
    a, da, b, db = pair
    n = 10_000
    cache: dict = {}
    for size in SIZES + [8 * MiB]:  # filled before the sender threads share it
        _payload(size, cache)

    def build(i: int) -> MTest:
        if i % 2500 == 1249:
            return MTest(i, b"", _payload(8 * MiB, cache)[:1024], _payload(8 * MiB, cache))
        fs, ms_, ds = SIZES[i % 7], SIZES[(i // 7) % 7], SIZES[(i // 49) % 7]
        return MTest(i, _payload(fs, cache), _payload(ms_, cache), _payload(ds, cache))

    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    cb = b.connect_to(EntityName.TYPE_OSD, a.get_myaddr())

    def sender(conn):
        for i in range(n):
            conn.send_message(build(i))
    ts = [threading.Thread(target=sender, args=(c,)) for c in (ca, cb)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wait_for(lambda: len(da.msgs) == n and len(db.msgs) == n, timeout=240, what="10k messages each way")
    for got in (da.msgs, db.msgs):
        assert [m.ident for m in got] == list(range(n))
        for m in got[::97] + [got[1249], got[3749]]:
            want = build(m.ident)
            assert bytes(m.front) == bytes(want.front)
            assert bytes(m.middle) == bytes(want.middle)
            assert bytes(m.data) == bytes(want.data)
    assert a.perf_dump()["AsyncMessenger"]["msgr_recv_messages"] >= n


def test_keepalive2_round_trip(pair):
    a, da, b, db = pair
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    wait_for(ca.is_connected, what="connected")
    before = ca._proto.last_keepalive_ack_us
    ca.send_keepalive()
    wait_for(lambda: ca._proto.last_keepalive_ack_us != before, what="keepalive2 ack")
    assert ca._proto.last_keepalive_ack_us > 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("pair", [{"cfg": {"ms_dispatch_throttle_bytes": 8 * MiB}}], indirect=True)
def test_dispatch_throttle_really_blocks_and_resumes(pair):
    a, da, b, db = pair
    db.block.clear()  # B's dispatcher holds the first message: the dispatch throttle fills up
    blob = os.urandom(4 * MiB)
    count = 256       # 1 GiB queued, all referring to one 4 MiB buffer
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    rss0 = _rss_bytes()
    for i in range(count):
        ca.send_message(MTest(i, b"", b"", blob))
    wait_for(lambda: b.dispatch_throttle.waits > 0 or b.perf_dump()["AsyncMessenger"]["msgr_throttle_waits"] > 0,
             what="the dispatch throttle to refuse")
    received = b.perf_dump()["AsyncMessenger"]["msgr_recv_messages"]
    assert received <= 4, f"{received} messages read past an 8 MiB throttle"
    assert b.dispatch_throttle.current <= 8 * MiB + 4 * MiB
    assert _rss_bytes() - rss0 < 200 * MiB
    db.block.set()
    wait_for(lambda: len(db.msgs) == count, timeout=120, what="all messages after the throttle opens")
    assert [m.ident for m in db.msgs] == list(range(count))
    assert bytes(db.msgs[-1].data) == blob
    wait_for(lambda: b.dispatch_throttle.current == 0, what="throttle released")


@pytest.mark.parametrize("pair", [{"policy_a": Policy.lossy_client(), "policy_b": Policy.stateless_server()}],
                         indirect=True)
def test_mark_down_gives_the_peer_a_reset(pair):
    a, da, b, db = pair
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    ca.send_message(MTest(5))
    wait_for(lambda: len(db.msgs) == 1, what="first message")
    ca.mark_down()
    wait_for(lambda: db.count("reset") == 1, what="reset on the peer")
    assert da.count("reset") == 0          # mark_down itself gives no reset callback
    c2 = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    assert c2 is not ca
    c2.send_message(MTest(6))
    wait_for(lambda: len(db.msgs) == 2, what="message on the new session")


def test_refused_connection_calls_ms_handle_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    ms, d = make(EntityName.client(1), 77, policy=Policy.lossy_client(), bind=False)
    try:
        conn = ms.connect_to(EntityName.TYPE_OSD, EntityAddr.parse(f"v1:127.0.0.1:{port}/5"))
        conn.send_message(MTest(1))
        wait_for(lambda: d.count("refused") >= 1, what="ms_handle_refused")
        assert d.events[0][1] is conn
    finally:
        ms.shutdown()
        ms.wait()


def test_local_delivery_to_ourselves():
    ms, d = make(EntityName.osd(3), 33, fast=True)
    try:
        conn = ms.connect_to(EntityName.TYPE_OSD, ms.get_myaddr())
        assert conn.is_connected() and conn.get_peer_addr() == ms.get_myaddr()
        for i in range(10):
            conn.send_message(MTest(i))
        wait_for(lambda: len(d.msgs) == 10, what="local messages")
        assert sorted(m.ident for m in d.msgs) == list(range(10))
        assert all(m.get_connection() is conn for m in d.msgs)
        assert str(d.msgs[0].get_source()) == "osd.3"
        assert ms.perf_dump()["AsyncMessenger"]["msgr_local_messages"] == 10
    finally:
        ms.shutdown()
        ms.wait()


@pytest.mark.parametrize("pair", [{"fast": True}], indirect=True)
def test_fast_dispatch_on_worker_queued_on_dispatch_thread(pair):
    a, da, b, db = pair
    ca = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    for i in range(200):
        ca.send_message(MTest(i))
    wait_for(lambda: len(db.msgs) == 200, what="200 messages")
    kinds = {k: {t for kk, t in db.threads if kk == k} for k in ("fast", "queued")}
    assert kinds["fast"] and all(t.startswith("msgr-worker") for t in kinds["fast"])
    assert kinds["queued"] and all(t.startswith("ms_dispatch") for t in kinds["queued"])
    fast_ids = sorted(m.ident for m in db.msgs if m.ident % 2 == 0)
    assert fast_ids == list(range(0, 200, 2))
    perf = b.perf_dump()["AsyncMessenger"]
    assert perf["msgr_fast_dispatched"] == 100 and perf["msgr_queued_dispatched"] == 100


def test_shutdown_wait_and_start_again():
    a, da = make(EntityName.osd(0), 1)
    b, db = make(EntityName.osd(1), 2)
    try:
        addr_b = b.get_myaddr()
        a.connect_to(EntityName.TYPE_OSD, addr_b).send_message(MTest(1))
        wait_for(lambda: len(db.msgs) == 1, what="first message")
        for ms in (a, b):
            ms.shutdown()
            ms.wait()
        b.start()
        a.start()
        assert b.get_myaddr() == addr_b
        a.connect_to(EntityName.TYPE_OSD, addr_b).send_message(MTest(2))
        wait_for(lambda: len(db.msgs) == 2, what="a message after restart")
        assert db.msgs[-1].ident == 2
    finally:
        for ms in (a, b):
            ms.shutdown()
            ms.wait()

