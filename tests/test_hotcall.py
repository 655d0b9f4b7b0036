"""msgr._hotcall (csrc/hotcall.c): the C __init__ builds what the Python one builds, a message
class it cannot serve in place goes the Python way with the same bytes, changes to a class are seen,
bad arguments are clean errors, nothing leaks over many calls, and a missing module falls back
(warned once) or, under MSGR_REQUIRE_CEXT=1, is an ImportError."""
from __future__ import annotations

import gc
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_crc import import_msgr_in_child

from msgr import _cext, _cwire, message
from msgr.features import MSG_AUTH, NOSRCADDR
from msgr.message import Message
from msgr.protocol import outq
from msgr.protocol.outq import Framer

hot = _cext.hotcall()
pytestmark = pytest.mark.skipif(hot is None, reason="msgr._hotcall is not built")

FEATURES = NOSRCADDR | MSG_AUTH


class _Versioned(Message):
    TYPE = 0x7E70
    HEAD_VERSION = 5
    COMPAT_VERSION = 2


class _OwnInit(Message):
    TYPE = 0x7E71

    def __init__(self, x: int = 3) -> None:
        super().__init__()
        self.x = x


class _Shadowed(Message):
    """A property over a slot: the C paths must not read the slot under it."""
    TYPE = 0x7E72

    @property   # type: ignore[override]
    def front(self) -> bytes:
        return b"property front"

    @front.setter
    def front(self, value: bytes) -> None:
        pass


def _state(m: Message) -> tuple:
    return (type(m), m.header, m._footer, bytes(m.front), m.middle, m.data, m._connection, m._throttled,
            m._encoded_features, m._recv_stamp_us)


def _pure_built(cls: type[Message]) -> Message:
    m = cls.__new__(cls)
    _PURE_INIT(m)   # Message's own part: the subclass's __init__ adds x
    if cls is _OwnInit:
        m.x = 3
    return m


_PURE_INIT = message._PY_INIT


def test_c_init_builds_what_the_python_init_builds():
    assert type(Message.__dict__["__init__"]).__name__ == "method_descriptor"
    for cls in (Message, _Versioned, _OwnInit, _Shadowed):
        m = cls()
        assert _state(m) == _state(_pure_built(cls)), cls
        assert m.header is not cls().header
    assert _OwnInit().x == 3
    with pytest.raises(TypeError):
        Message(1)   # type: ignore[call-arg]


def _pure_framer() -> Framer:
    f = Framer(FEATURES, True, True, 8, 4)
    f._hot = None
    f._batch = False
    f._cflags = None
    return f


def _frame(msgs: list[Message], hot_on: bool, ack: int = 0) -> tuple:
    f = Framer(FEATURES, True, True, 8, 4) if hot_on else _pure_framer()
    out: list = []
    n, err = f.frame_all(msgs, 0, out, ack)
    return n, err, b"".join(bytes(b) for b in out), [(m.header, m._encoded_features) for m in msgs]


def test_a_class_with_a_property_over_a_slot_is_framed_the_python_way():
    for k in (1, 3):
        a, b = [_Shadowed() for _ in range(k)], [_Shadowed() for _ in range(k)]
        assert _frame(a, True, 5) == _frame(b, False, 5)
        assert b"property front" in _frame([_Shadowed()], True)[2]


def test_a_change_to_a_class_is_seen_by_the_next_framing():
    class Changing(Message):
        TYPE = 0x7E73

    def enc(self: Message, features: int) -> None:
        self.front = b"encoded"

    for lone in (True, False):
        k = 1 if lone else 3
        first = _frame([Changing() for _ in range(k)], True)
        assert b"encoded" not in first[2] and first[3][0][0].type == 0x7E73
        Changing.encode_payload = enc    # type: ignore[method-assign]
        Changing.TYPE = 0x7E74
        got = _frame([Changing() for _ in range(k)], True)
        assert got == _frame([Changing() for _ in range(k)], False)
        assert b"encoded" in got[2] and got[3][0][0].type == 0x7E74
        del Changing.encode_payload
        Changing.TYPE = 0x7E73


def test_things_that_are_not_messages_take_the_python_way():
    f = Framer(FEATURES, True, True, 8, 4)
    for framer in (f, _pure_framer()):
        with pytest.raises(AttributeError):   # as the Python framers do
            framer.frame_all([Message(), object(), Message()], 0, [])   # type: ignore[list-item]
    m = Message()
    m.header = None   # type: ignore[assignment]
    assert hot.frame_one(f._hot, m, 0, 0) is None
    assert hot.frame_burst(f._hot, [m], 0, 0, []) == (0, None, None)
    del m.front
    assert hot.frame_one(f._hot, m, 0, 0) is None


def test_bad_arguments_are_clean_errors():
    f = Framer(FEATURES, True, True, 8, 4)
    with pytest.raises(TypeError):
        hot.frame_burst(f._hot, (Message(),), 0, 0, [])   # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hot.frame_one((1, 2), Message(), 0, 0)
    with pytest.raises(OverflowError):
        hot.frame_one(f._hot, Message(), -1, 0)
    with pytest.raises(ValueError):
        hot.frame_burst(f._hot, [Message()], -1, 0, [])
    with pytest.raises(ValueError):
        hot.scan(bytearray(10), 0, 11, 7, 100, 4)
    with pytest.raises(ValueError):
        hot.scan(bytearray(10), -1, None, 7, 100, 4)
    with pytest.raises(TypeError):
        hot.scan("not a buffer", 0, None, 7, 100, 4)   # type: ignore[arg-type]
    assert hot.scan(b"\x06", 3, None, 7, 100, 4) == (0, 3, [], 0, 0)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), off=st.integers(0, 40), flags=st.integers(0, 7),
       max_inline=st.sampled_from([0, 16, 1 << 20]))
def test_scan_pinned_is_scan_of_64_frames(data, off, flags, max_inline):
    buf = bytearray(data)
    end = len(buf)
    off = min(off, end)
    got = _cwire.scan_pinned(_cwire.pin(buf), off, end, flags, max_inline)
    assert got == hot.scan(buf, off, end, flags, max_inline, 64)
    assert got == _cwire._scan_py(buf, off, end, flags, max_inline, 64)


def _blocks_after(fn, rounds: int) -> int:
    """Allocated blocks gained over ``rounds`` calls of ``fn`` (cycles collected before each count)."""
    fn()
    fn()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(rounds):
        fn()
    gc.collect()
    return sys.getallocatedblocks() - before


def test_no_references_leak_over_many_calls():
    """Every path (run, lone message, encode error, the Python way, scan, __init__), 20k times:
    the interpreter's allocated blocks do not grow with the count."""
    f = Framer(FEATURES, True, True, 8, 4)
    conf = f._hot

    class Failing(Message):
        TYPE = 0x7E75

        def encode_payload(self, features: int) -> None:
            raise ValueError("no")

    stream: list = []
    Framer(FEATURES, True, True, 8, 4).frame_all([Message() for _ in range(3)], 0, stream, 9)
    rx = bytearray(b"".join(stream))
    flags = _cwire.scan_flags(True, True, True)

    def once() -> None:
        msgs = [Message() for _ in range(4)]
        for m in msgs:
            m.front = b"x" * 5000
        out: list = []
        f.frame_all(msgs, 0, out, 3)
        f.frame_all([Message()], 0, out, 3)
        f.frame_all([Message(), Failing(), Message()], 0, out)
        hot.frame_one(conf, Failing(), 0, 1)
        big = Message()
        big.data = bytes(outq.INLINE_MAX + 1)
        f.frame_all([big, Message()], 0, out)
        hot.scan_pinned(rx, 0, len(rx), flags, 1 << 20)
        hot.scan(rx, 1, None, flags, 1 << 20, 2)
        for r in hot.scan(rx, 0, None, flags, 1 << 20, 8)[2]:
            if r[0] == 7:
                hot.decode_record(r, view, None, 5)

        held = [Message() for _ in range(3)]
        for k, m in enumerate(held):
            m._throttled = pairs if k else ((thr, 2),)
        hot.release_throttles(held)
        thr.puts.clear()

    thr = _CountingThrottle()
    pairs = ((thr, 1),)
    view = memoryview(rx)
    grown = _blocks_after(once, 20000)
    assert grown < 2000, grown   # a reference leaked per call would be 20000 or more


def test_missing_hotcall_warns_once_and_keeps_the_cffi_paths():
    r = import_msgr_in_child("sys.modules['msgr._hotcall'] = None")
    assert r.returncode == 0, r.stderr
    first, *warned = r.stdout.splitlines()
    assert first.split()[3:] == ["True", "True"]   # cffi's framers are in use
    assert len(warned) == 1 and warned[0].startswith("RuntimeWarning pymsgr: the C fast path msgr._hotcall "
                                                     "is not built"), warned


def test_missing_hotcall_is_an_error_when_required():
    r = import_msgr_in_child("sys.modules['msgr._hotcall'] = None", MSGR_REQUIRE_CEXT="1")
    assert r.returncode != 0
    assert "ImportError: MSGR_REQUIRE_CEXT=1 but the C fast path msgr._hotcall is not built" in r.stderr


def test_a_stale_hotcall_is_an_error_when_required():
    r = import_msgr_in_child("stale = types.ModuleType('msgr._hotcall')\nsys.modules['msgr._hotcall'] = stale",
                             MSGR_REQUIRE_CEXT="1")
    assert r.returncode != 0
    assert "msgr._hotcall is out of date: it lacks bind" in r.stderr


class _Decoded(Message):
    TYPE = 0x7E76
    HEAD_VERSION = 2

    def decode_payload(self) -> None:
        if self.front[:1] == b"!":
            raise ValueError("bad payload")
        self.value = bytes(self.front[:2])


class _Plain(Message):
    TYPE = 0x7E77
    HEAD_VERSION = 2


class _PlainOwnInit(Message):
    TYPE = 0x7E78

    def __init__(self) -> None:
        super().__init__()
        self.extra = 1


def _received(m: Message) -> tuple:
    return (type(m), m.header, m.front, m.middle, m.data, m._footer, m._connection, m._recv_stamp_us,
            m._throttled, m._encoded_features, getattr(m, "value", None), getattr(m, "extra", None))


@settings(max_examples=200, deadline=None)
@given(type_=st.sampled_from([0, 0x7E76, 0x7E77, 0x7E78, 0x7E79]), compat=st.integers(0, 3),
       lens=st.tuples(st.integers(0, 40), st.integers(0, 3), st.integers(0, 3)), bang=st.booleans(),
       lead=st.integers(0, 5), src_num=st.sampled_from([-1, 0, 7]))
def test_decode_record_builds_what_the_python_one_builds(type_, compat, lens, bang, lead, src_num):
    m = Message()
    m.header.type, m.header.compat_version, m.header.src_num = type_, compat, src_num
    m.front = (b"!" if bang else b"") + bytes(range(lens[0]))
    m.middle, m.data = b"m" * lens[1], b"d" * lens[2]
    out: list = []
    Framer(FEATURES, True, True, 8, src_num).frame_all([m], 0, out)
    buf = bytearray(lead) + bytearray(b"".join(bytes(b) for b in out))
    _status, _end, recs, _n, _b = hot.scan(buf, lead, None, _cwire.scan_flags(), 1 << 20, 4)
    (r,) = recs
    conn = object()
    results = []
    for decode in (hot.decode_record, message._decode_record_py):
        try:
            results.append(_received(decode(r, memoryview(buf), conn, 123)))
        except Exception as exc:   # noqa: BLE001 - the error itself is compared
            results.append((type(exc), str(exc)))
    assert results[0] == results[1]


def test_decode_record_refuses_bad_arguments():
    r = (7, 0, 75) + (0,) * 19 + (10, 0)
    with pytest.raises(TypeError):
        hot.decode_record(r[:-1], memoryview(bytearray(100)), None, 0)
    with pytest.raises(ValueError):
        hot.decode_record(r[:8] + (200,) + r[9:], memoryview(bytearray(100)), None, 0)
    v = memoryview(bytearray(100))
    v.release()
    with pytest.raises(ValueError):
        hot.decode_record(r, v, None, 0)


class _CountingThrottle:
    def __init__(self) -> None:
        self.puts: list[int] = []

    def put(self, count: int) -> None:
        self.puts.append(count)


@settings(max_examples=200, deadline=None)
@given(plan=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=12), lone=st.booleans())
def test_release_throttles_puts_what_the_python_one_puts(plan, lone):
    """Runs of messages sharing a pairs object (or not), empty and None holdings, a lone message."""
    if lone:
        plan = plan[:1]

    def run(release) -> tuple:
        ta, tb = _CountingThrottle(), _CountingThrottle()
        shared = ((ta, 1), (tb, 100))
        kinds = [None, (), shared, [(ta, 1), (tb, 7)]]
        msgs = []
        for kind, plain in plan:
            m = Message() if plain else _Decoded()
            m._throttled = kinds[kind]   # type: ignore[assignment]
            msgs.append(m)
        release(msgs)
        return ta.puts, tb.puts, [m._throttled for m in msgs]

    assert run(hot.release_throttles) == run(message._release_throttles_py)


def test_release_throttles_hands_unusual_batches_to_python():
    t = _CountingThrottle()
    m = _Shadowed()   # not a class served in place
    m._throttled = ((t, 2),)
    hot.release_throttles((m,))
    assert t.puts == [2] and m._throttled is None
    with pytest.raises(AttributeError):
        hot.release_throttles([object()])


def test_c_getters_read_what_the_python_ones_read():
    class OddHeader:
        type, seq, priority = 11, 12, 13

    conn = object()
    for cls in (Message, _Versioned, _Shadowed):
        m = cls()
        m._connection = conn   # type: ignore[assignment]
        m.header.seq, m.header.priority = 99, 3
        assert (m.get_connection(), m.get_type(), m.get_seq(), m.get_priority()) == \
            (conn, m.header.type, 99, 3)
        m.header = OddHeader()   # type: ignore[assignment]
        assert (m.get_type(), m.get_seq(), m.get_priority()) == (11, 12, 13)
    assert Message.get_connection.__doc__ and "connection" in Message.get_connection.__doc__
    m = Message()
    del m._connection
    with pytest.raises(AttributeError):
        m.get_connection()


def test_the_cffi_paths_still_work_without_hotcall():
    """MSGR_NO_HOTCALL=1: scanning, decoding and messenger exchanges through msgr._fastpath alone
    (the fallback when msgr._hotcall is not built; tests/test_frame_out.py compares its framers
    in this process), checked by their own tests in a child."""
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MSGR_NO_HOTCALL": "1", "MSGR_REQUIRE_CEXT": "1"}
    r = subprocess.run([sys.executable, "-c", "import msgr.message as m, msgr._cwire as w, msgr.protocol.outq as q;"
                        "print(m._hot, q._hot_burst, w.scan is w._scan_py, type(m.Message.__init__).__name__)"],
                       env=env, capture_output=True, text=True, cwd=root, timeout=60)
    assert r.stdout.split() == ["None", "None", "False", "function"], r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        "tests/test_cwire.py", "tests/test_message.py",
                        "tests/test_protocol_open.py", "tests/test_messenger_loopback.py"],
                       env=env, capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.parametrize("k", [1, 3])
def test_a_seq_past_u64_stops_where_the_python_framer_stops(k):
    def run(hot_on: bool) -> tuple:
        f = Framer(FEATURES, True, True, 8, 4) if hot_on else _pure_framer()
        out: list = []
        n, err = f.frame_all([Message() for _ in range(k)], 2**64 - 3, out)
        return n, type(err), b"".join(bytes(b) for b in out)
    assert run(True) == run(False)
    assert run(True)[:2] == ((1, type(None)) if k == 1 else (2, OverflowError))
