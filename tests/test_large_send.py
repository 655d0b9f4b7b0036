"""Big segments' CRCs computed by the sending thread (outq.precompute_crcs, called by
AsyncConnection.send_message) frame to the very bytes the framer computes itself, with the C framer
and the pure one, every CRC mode and footer format; a segment replaced after the precompute, or a
mutable one, is computed at framing time; and a big message crosses a real socket intact."""
from __future__ import annotations

import threading

import pytest

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.features import MSG_AUTH, NOSRCADDR
from msgr.protocol import outq
from msgr.protocol.outq import PRECOMPUTE_MIN, Framer, precompute_crcs


def _msg(front: object, middle: object = b"", data: object = b"") -> Message:
    m = Message()
    m.front, m.middle, m.data = front, middle, data   # type: ignore[assignment]
    m.header.tid, m.header.type = 77, 0x7F21
    return m


def _wire(m: Message, kind: str, features: int, crc_header: bool, crc_data: bool) -> bytes:
    f = Framer(features, crc_header, crc_data, 8, 4100, old_src_addr=bytes(136))
    f._batch = False
    if kind == "pure":
        f._cflags = None
    m.header.seq = 5
    out: list = []
    f.reserve(1)
    f.frame(m, out)
    f.release()
    return b"".join(bytes(b) for b in out)


def _segments(seed: int) -> tuple[bytes, bytes, bytes]:
    big = bytes((seed * 7 + i) & 0xFF for i in range(256)) * (PRECOMPUTE_MIN // 256 + 3)
    return big, b"mid" * 5, big[::-1] + b"x"


KINDS = ["pure"] + (["c"] if outq._c_frame is not None else [])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("features", [NOSRCADDR | MSG_AUTH, NOSRCADDR, MSG_AUTH, 0])
@pytest.mark.parametrize("crc", [(True, True), (True, False), (False, True), (False, False)])
def test_precomputed_crcs_frame_the_same_bytes(kind: str, features: int, crc: tuple[bool, bool]) -> None:
    front, middle, data = _segments(1)
    plain = _wire(_msg(front, middle, data), "pure", features, *crc)
    assert _wire(_msg(front, middle, data), kind, features, *crc) == plain
    m = _msg(front, middle, data)
    precompute_crcs(m)
    assert m.__dict__["_seg_crcs"][0][0] is front and m.__dict__["_seg_crcs"][1] is None
    assert _wire(m, kind, features, *crc) == plain
    assert _wire(m, kind, features, *crc) == plain        # framed again (a lossless resend)


@pytest.mark.parametrize("kind", KINDS)
def test_a_segment_replaced_after_the_precompute_is_computed_again(kind: str) -> None:
    front, middle, data = _segments(2)
    m = _msg(front, middle, data)
    precompute_crcs(m)
    other_front, _, other_data = _segments(3)
    m.front, m.data = other_front, other_data               # e.g. re-encoded for other features
    assert _wire(m, kind, NOSRCADDR | MSG_AUTH, True, True) == \
        _wire(_msg(other_front, middle, other_data), "pure", NOSRCADDR | MSG_AUTH, True, True)


def test_mutable_and_small_segments_are_not_precomputed() -> None:
    front, _, data = _segments(4)
    m = _msg(bytearray(front), b"", memoryview(data))
    precompute_crcs(m)
    assert "_seg_crcs" not in m.__dict__
    m = _msg(b"x" * (PRECOMPUTE_MIN - 1))
    precompute_crcs(m)
    assert "_seg_crcs" not in m.__dict__


class _MBig(Message):
    TYPE = 0x7F22


def test_big_messages_sent_from_an_application_thread_arrive_intact() -> None:
    got: list[tuple[bytes, bytes]] = []
    done = threading.Event()

    class Sink(Dispatcher):
        def ms_can_fast_dispatch(self, msg: Message) -> bool:
            return True

        def ms_fast_dispatch(self, msg: Message) -> None:
            got.append((bytes(msg.front), bytes(msg.data)))
            if len(got) == 3:
                done.set()

    cfg = Config(ms_async_op_threads=1)
    server = Messenger.create(EntityName.osd(0), nonce=4242, config=cfg)
    server.set_default_policy(Policy.stateful_server())
    addr = server.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    server.add_dispatcher_head(Sink())
    server.start()
    client = Messenger.create(EntityName.client(4243), nonce=4243, config=cfg)
    client.set_default_policy(Policy.lossless_client())
    client.add_dispatcher_head(Dispatcher())
    client.start()
    try:
        conn = client.connect_to(EntityName.TYPE_OSD, addr)
        sent = []
        for seed in range(3):
            front, _, data = _segments(10 + seed)
            m = _MBig()
            m.front, m.data = front, data
            sent.append((front, data))
            conn.send_message(m)
        assert done.wait(20)
        assert got == sent
    finally:
        for ms in (client, server):
            ms.shutdown()
        for ms in (client, server):
            ms.wait()
