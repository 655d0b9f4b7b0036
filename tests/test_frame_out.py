"""Batch framing of a send turn (csrc/frame_out.c via ``Framer.frame_all``, through cffi or
msgr._hotcall's frame_burst / frame_one) gives the bytes of the pure-Python framer and of the
per-message C framer, message for message, for every header field, segment size and type, CRC mode
and footer format, with or without the ACK after them (a lone message and its ACK: msgr_frame_one);
and it stops where they stop."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgr import Message
from msgr.features import MSG_AUTH, NOSRCADDR
from msgr.protocol import outq
from msgr.protocol.outq import INLINE_MAX, Framer
from msgr.wire import pack_ack

needs_c = pytest.mark.skipif(outq._c_batch is None, reason="the C fast path (msgr._fastpath) is not built")
needs_hot = pytest.mark.skipif(outq._hot_burst is None, reason="msgr._hotcall is not built")
#: the framers compared: msgr._hotcall's (when built), cffi's batch and per-message ones, pure Python
C_KINDS = (["hot"] if outq._hot_burst is not None else []) + ["c-batch", "c-each"]


def _framer(kind: str, features: int, crc_header: bool, crc_data: bool, src_num: int) -> Framer:
    f = Framer(features, crc_header, crc_data, 8, src_num)
    if kind != "hot":
        f._hot = None
    if kind == "c-each":
        f._batch = False
    elif kind == "pure":
        f._batch = False
        f._cflags = None
    return f


_u16 = st.integers(0, 0xFFFF)
_seg_len = st.one_of(st.integers(0, 40), st.integers(INLINE_MAX - 8, INLINE_MAX + 8), st.integers(0, 3000))
_seg_kind = st.sampled_from(["bytes", "bytearray", "memoryview"])


class _Typed(Message):
    """A registered type: its TYPE replaces header.type when framed."""
    TYPE = 0x7E60
    HEAD_VERSION = 3


class _Encoding(Message):
    """A payload encoded at framing time (the front grows by the features' low byte)."""
    TYPE = 0x7E61

    def encode_payload(self, features: int) -> None:
        self.front = bytes(self.front) + bytes((features & 0xFF,))


_CLASSES = (Message, _Typed, _Encoding)


@st.composite
def _messages(draw: st.DrawFn) -> list[tuple]:
    specs = []
    for _ in range(draw(st.integers(1, 12))):
        lens = [draw(_seg_len) for _ in range(3)]
        kinds = [draw(_seg_kind) for _ in range(3)]
        fill = draw(st.integers(0, 255))
        fields = (draw(st.integers(0, 2**64 - 1)), draw(_u16), draw(_u16), draw(_u16),
                  draw(_u16), draw(st.sampled_from([0, 1, 0xFFFF])), draw(_u16))
        specs.append((lens, kinds, fill, fields, draw(st.integers(0, len(_CLASSES) - 1))))
    return specs


def _build(specs: list[tuple]) -> list[Message]:
    msgs = []
    for lens, kinds, fill, (tid, type_, prio, version, data_off, compat, reserved), *cls in specs:
        m = _CLASSES[cls[0]]() if cls else Message()
        segs = []
        for i, (n, kind) in enumerate(zip(lens, kinds, strict=True)):
            raw = bytes((fill + i + j) & 0xFF for j in range(n))
            segs.append(raw if kind == "bytes" else bytearray(raw) if kind == "bytearray"
                        else memoryview(bytearray(raw)))
        m.front, m.middle, m.data = segs
        h = m.header
        h.tid, h.type, h.priority, h.version = tid, type_, prio, version
        h.data_off, h.compat_version, h.reserved = data_off, compat, reserved
        msgs.append(m)
    return msgs


def _frame(kind: str, specs: list[tuple], features: int, crc_header: bool, crc_data: bool,
           src_num: int, seq0: int, ack: int = 0) -> tuple[int, type | None, bytes, list[int]]:
    msgs = _build(specs)
    out: list = []
    n, err = _framer(kind, features, crc_header, crc_data, src_num).frame_all(msgs, seq0, out, ack)
    return n, type(err) if err is not None else None, b"".join(bytes(b) for b in out), \
        [m.header.seq for m in msgs], [(m.header, m._encoded_features, bytes(m.front)) for m in msgs]


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=_messages(), auth=st.booleans(), crc_header=st.booleans(), crc_data=st.booleans(),
       src_num=st.sampled_from([-1, 0, 4100, 2**63 - 1]), seq0=st.integers(0, 2**40),
       ack=st.sampled_from([0, 1, 2**40 + 3]), lone=st.booleans())
def test_batch_framing_is_byte_identical_to_the_pure_and_per_message_framers(
        specs, auth, crc_header, crc_data, src_num, seq0, ack, lone):
    if lone:
        specs = specs[:1]      # a round trip's reply: msgr_frame_one when its segments are bytes
    features = NOSRCADDR | (MSG_AUTH if auth else 0)
    pure = _frame("pure", specs, features, crc_header, crc_data, src_num, seq0, ack)
    assert pure[0] == len(specs) and pure[1] is None
    assert pure[3] == list(range(seq0 + 1, seq0 + 1 + len(specs)))
    if ack:
        assert pure[2].endswith(pack_ack(ack))
    for kind in C_KINDS:
        assert _frame(kind, specs, features, crc_header, crc_data, src_num, seq0, ack) == pure, kind


@needs_c
@settings(max_examples=60, deadline=None)
@given(specs=_messages(), bad_at=st.integers(0, 11), field=st.sampled_from(["priority", "tid", "version"]))
def test_a_field_out_of_range_stops_the_batch_at_that_message_as_the_pure_framer_does(specs, bad_at, field):
    bad_at %= len(specs)

    def run(kind: str) -> tuple:
        msgs = _build(specs)
        setattr(msgs[bad_at].header, field, 2**64 if field == "tid" else 0x10000)
        out: list = []
        n, err = _framer(kind, NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(msgs, 10, out)
        # the headers up to the bad one (cffi's batch sets src_type/src_num of the rest of its run too)
        return n, type(err), b"".join(bytes(b) for b in out), [m.header.seq for m in msgs], \
            [(m.header, m._encoded_features) for m in msgs[:bad_at + 1]]

    pure = run("pure")
    assert pure[0] == bad_at and pure[1] is OverflowError
    assert pure[3][bad_at] == 0                       # the bad message keeps its (unset) seq
    for kind in C_KINDS:
        assert run(kind) == pure, kind


@needs_c
@pytest.mark.parametrize("kind", C_KINDS[:-1])
def test_small_messages_of_a_turn_leave_in_one_buffer_and_big_ones_as_they_are(kind):
    msgs = _build([([8, 0, 0], ["bytes"] * 3, 1, (0,) * 7)] * 3
                  + [([8, 0, INLINE_MAX + 1], ["bytes"] * 3, 2, (0,) * 7)]
                  + [([8, 0, 0], ["bytes"] * 3, 3, (0,) * 7)] * 2)
    big = msgs[3].data
    out: list = []
    n, err = _framer(kind, NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(msgs, 0, out)
    assert (n, err) == (6, None)
    # run of three, then the big one as tag+header, front, data (not copied), footer, then a run of two
    assert len(out) == 1 + 4 + 1
    assert out[3] is big
    assert len(out[0]) == 3 * (54 + 8 + 21) and len(out[5]) == 2 * (54 + 8 + 21)


@needs_c
def test_lone_messages_share_an_arena_and_keep_their_bytes_until_written():
    """Replies framed one by one (msgr_frame_one) go into one arena, each a view of its own part;
    a new arena when the rest is too small, the views handed out stay valid."""
    c, pure = (_framer(k, NOSRCADDR | MSG_AUTH, True, True, 1) for k in ("c-batch", "pure"))
    got: list = []
    want: list = []
    for i in range(200):
        spec = [([16 + i % 7, 0, 3000 if i % 50 == 0 else 0], ["bytes"] * 3, i, (i,) * 7)]
        assert c.frame_all(_build(spec), i, got, i % 3) == (1, None)
        assert pure.frame_all(_build(spec), i, want, i % 3) == (1, None)
    assert all(type(b) is memoryview for b in got) and len(got) == 200
    assert len({id(b.obj) for b in got}) > 1                 # more than one arena
    assert b"".join(bytes(b) for b in got) == b"".join(bytes(b) for b in want)


@needs_hot
def test_a_lone_message_with_hotcall_is_one_bytes_with_its_ack():
    """msgr._hotcall's frame_one: a reply and its ACK leave as one bytes (bytearray segments too)."""
    hot, pure = (_framer(k, NOSRCADDR | MSG_AUTH, True, True, 1) for k in ("hot", "pure"))
    for i, kinds in enumerate((["bytes"] * 3, ["bytearray", "bytes", "bytearray"])):
        spec = [([16, 3, 5], kinds, i, (i + 1,) * 7)]
        got: list = []
        want: list = []
        assert hot.frame_all(_build(spec), 9, got, 4) == (1, None)
        assert pure.frame_all(_build(spec), 9, want, 4) == (1, None)
        assert len(got) == 1 and type(got[0]) is bytes
        assert got[0] == b"".join(bytes(b) for b in want)


def test_a_lone_message_that_cannot_be_framed_sends_no_ack():
    for kind in ("pure", *C_KINDS):
        if kind != "pure" and outq._c_batch is None:
            continue
        m = _build([([8, 0, 0], ["bytes"] * 3, 1, (0,) * 7)])
        m[0].header.priority = 0x10000
        out: list = []
        n, err = _framer(kind, NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(m, 3, out, 7)
        assert n == 0 and isinstance(err, OverflowError) and out == [] and m[0].header.seq == 0


class _Unencodable(Message):
    TYPE = 0x7E5F

    def encode_payload(self, features: int) -> None:
        raise ValueError("cannot encode")


@pytest.mark.parametrize("kind", ["hot", "c-batch", "c-each", "pure"])
@pytest.mark.parametrize("lone", [False, True])
def test_a_payload_that_does_not_encode_stops_the_batch_there(kind, lone):
    if kind != "pure" and outq._c_batch is None or kind == "hot" and outq._hot_burst is None:
        pytest.skip("the C fast path (msgr._fastpath / msgr._hotcall) is not built")
    msgs = _build([([8, 0, 0], ["bytes"] * 3, 1, (0,) * 7)] * 2)
    msgs.insert(1, _Unencodable())
    if lone:
        msgs = msgs[1:2]
    out: list = []
    n, err = _framer(kind, NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(msgs, 5, out, 3)
    assert isinstance(err, ValueError) and str(err) == "cannot encode"
    if lone:
        assert n == 0 and out == [] and msgs[0].header.seq == 0
        return
    assert n == 1
    assert [m.header.seq for m in msgs] == [6, 0, 0]
    assert sum(map(len, out)) == 54 + 8 + 21


@needs_c
@pytest.mark.parametrize("kind", C_KINDS[:-1])
def test_a_long_turn_is_cut_into_buffers_of_bounded_size(kind):
    msgs = _build([([16, 0, 0], ["bytes"] * 3, 1, (0,) * 7)] * 5000)
    out: list = []
    n, err = _framer(kind, NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(msgs, 0, out)
    assert (n, err) == (5000, None)
    one = 54 + 16 + 21
    assert len(out) > 1 and all(len(b) <= outq.RUN_MAX_BYTES + one for b in out)
    assert sum(map(len, out)) == 5000 * one
    pure: list = []
    assert _framer("pure", NOSRCADDR | MSG_AUTH, True, True, 1).frame_all(_build(
        [([16, 0, 0], ["bytes"] * 3, 1, (0,) * 7)] * 5000), 0, pure) == (5000, None)
    assert b"".join(out) == b"".join(bytes(b) for b in pure)
