"""Lossless delivery through a FaultProxy: random delays, stalls and resets mid-frame.

osd.0 sends 10,000 messages to osd.1 on Policy.lossless_peer; the TCP path goes through a
FaultProxy that delays every chunk by 0-5 ms, stalls now and then, and resets connections in
the middle of a chunk (so in the middle of a frame or of the handshake). Every reset makes the
sender reconnect and resend what was not acknowledged. The receiver must see every id exactly
once, in order, with its payload intact.

Routing: a v1 client accepts only a server whose claimed address is the one it dialled (or a
blank IP with the same port and nonce), so dialling the proxy's own address would be refused as
the wrong node. The test therefore dials osd.1's real address and reroutes just that TCP connect
to the proxy (a test-only DNAT through ``EntityAddr.sockaddr``): the protocol sees the real
addresses, the bytes go through the proxy.
"""
from __future__ import annotations

import struct
import sys
import threading
import time

import pytest

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.errors import DecodeError
from msgr.testing import FaultProxy

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

COUNT = 10_000
DEADLINE_S = 50.0


def pad_for(ident: int) -> bytes:
    n = (ident * 7919) % 1500
    return bytes((ident + i) & 0xFF for i in range(n))


class MProxySeq(Message):
    """front = id (u64) + a pad derived from the id (so corruption is caught on decode)."""
    TYPE = 0x7F20

    def __init__(self, ident: int = 0) -> None:
        super().__init__()
        self.ident = ident
        self.front = struct.pack("<Q", ident) + pad_for(ident)

    def decode_payload(self) -> None:
        self.ident = struct.unpack_from("<Q", self.front)[0]
        if bytes(self.front[8:]) != pad_for(self.ident):
            raise DecodeError(f"MProxySeq {self.ident}: payload corrupted")


class Recorder(Dispatcher):
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.other: list = []
        self.events: list[str] = []
        self.lock = threading.Lock()

    def ms_can_fast_dispatch(self, msg) -> bool:
        return isinstance(msg, MProxySeq)

    def ms_fast_dispatch(self, msg) -> None:
        with self.lock:
            self.ids.append(msg.ident)

    def ms_dispatch(self, msg) -> bool:
        self.other.append(msg)
        return True

    def ms_handle_connect(self, conn) -> None:
        self.events.append("connect")

    def ms_handle_accept(self, conn) -> None:
        self.events.append("accept")

    def ms_handle_reset(self, conn) -> bool:
        self.events.append("reset")
        return True

    def ms_handle_remote_reset(self, conn) -> None:
        self.events.append("remote_reset")

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def messengers():
    cfg = Config(ms_initial_backoff=0.05, ms_max_backoff=0.5)
    made = []

    def make(name: EntityName, nonce: int, bind: str) -> tuple:
        ms = Messenger.create(name, nonce=nonce, config=cfg.copy())
        ms.set_default_policy(Policy.lossless_peer())
        rec = Recorder()
        ms.add_dispatcher_tail(rec)
        ms.bind(EntityAddr.parse(bind))
        ms.start()
        made.append(ms)
        return ms, rec
    yield make
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


def route_through(monkeypatch: pytest.MonkeyPatch, real: EntityAddr, proxy: FaultProxy) -> None:
    """Make TCP connects to ``real`` go to ``proxy`` instead (only that ip:port; binds are untouched)."""
    original = EntityAddr.sockaddr
    key = (real.ip, real.port)

    def sockaddr(self: EntityAddr) -> tuple:
        addr = original(self)
        return proxy.addr if addr[:2] == key else addr
    monkeypatch.setattr(EntityAddr, "sockaddr", sockaddr)


def test_ten_thousand_lossless_messages_through_delays_stalls_and_resets(messengers, monkeypatch) -> None:
    receiver, rec = messengers(EntityName.osd(1), 2002, "v1:127.0.0.1:0")
    target = receiver.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=7).start()
    route_through(monkeypatch, target, proxy)
    try:
        proxy.set_delay(0, 5)
        proxy.set_random_stalls(0.01, 20, 150)
        proxy.set_reset_probability(0.02)
        sender, srec = messengers(EntityName.osd(0), 1001, "v1:127.0.0.1:0")
        conn = sender.connect_to(EntityName.TYPE_OSD, target)
        t0 = time.monotonic()
        for i in range(COUNT):
            conn.send_message(MProxySeq(i))
            if i % 25 == 24:
                time.sleep(0.01)   # spread the stream over seconds so faults land all along it
        wait_for(lambda: rec.count() >= COUNT, DEADLINE_S - (time.monotonic() - t0),
                 f"{COUNT} messages (have {rec.count()})")
        # quiet the proxy, then give a late duplicate the chance to show up
        proxy.set_reset_probability(0)
        proxy.set_random_stalls(0, 0, 0)
        proxy.set_delay(0)
        time.sleep(0.5)
    finally:
        stats = proxy.stats()
        proxy.stop()
        perf = sender.perf_dump() if "sender" in locals() else {}
        print(f"proxy: {stats}\nsender perf: {perf}\nevents: sender {srec.events if 'srec' in locals() else []}"
              f" receiver {rec.events}", file=sys.stderr)
    ids = list(rec.ids)
    assert not rec.other, f"unexpected messages: {rec.other[:3]}"
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert ids == list(range(COUNT)), "messages lost or out of order"
    # the faults really happened (otherwise this proves nothing about reconnects)
    assert stats["resets"] >= 3 and stats["stalls"] >= 1 and stats["delayed_chunks"] > 0
    assert stats["connections"] >= 2


def test_lossless_through_split_bytes_half_closes_and_reset_all(messengers, monkeypatch) -> None:
    """One byte per send (every frame arrives in pieces) while a chaos thread half-closes each
    direction and resets every connection in turn: still exactly once, in order."""
    from msgr.testing import Direction
    count = 1500
    receiver, rec = messengers(EntityName.osd(1), 2004, "v1:127.0.0.1:0")
    target = receiver.get_myaddr()
    proxy = FaultProxy((str(target.ip), target.port), seed=11).start()
    route_through(monkeypatch, target, proxy)
    proxy.set_split(True)
    stop = threading.Event()
    actions = [lambda: proxy.half_close(Direction.TO_TARGET), lambda: proxy.half_close(Direction.TO_CLIENT),
               proxy.reset_all]

    def chaos() -> None:
        k = 0
        while not stop.wait(0.15):
            actions[k % len(actions)]()
            k += 1
    chaos_thread = threading.Thread(target=chaos, daemon=True)
    try:
        sender, _ = messengers(EntityName.osd(0), 1003, "v1:127.0.0.1:0")
        conn = sender.connect_to(EntityName.TYPE_OSD, target)
        chaos_thread.start()
        for i in range(count):
            conn.send_message(MProxySeq(i))
            if i % 10 == 9:
                time.sleep(0.005)
        wait_for(lambda: rec.count() >= count, DEADLINE_S, f"{count} messages (have {rec.count()})")
        stop.set()
        chaos_thread.join(5)
        time.sleep(0.5)
    finally:
        stop.set()
        stats = proxy.stats()
        proxy.stop()
        print(f"proxy: {stats}", file=sys.stderr)
    ids = list(rec.ids)
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert ids == list(range(count)), "messages lost or out of order"
    assert stats["half_closes"] >= 2 and stats["resets"] >= 1
    assert stats["split_sends"] == stats["bytes_to_target"] + stats["bytes_to_client"]
