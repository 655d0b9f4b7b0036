"""msgr._cwire: header/footer pack+parse and the frame scanner, identical on both backends."""
from __future__ import annotations

import importlib.util
import os
import random
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import msgr
from msgr import _cwire
from msgr import crc as msgr_crc
from msgr.errors import BadCrcError, BadTagError, DecodeError, ShortBufferError

try:
    from msgr._fastpath import ffi, lib
except ImportError:
    ffi = lib = None


def _load_fallback():
    """A second copy of msgr.crc + msgr._cwire imported as if MSGR_NO_CEXT=1."""
    saved_env, saved_mod = os.environ.get("MSGR_NO_CEXT"), sys.modules["msgr.crc"]
    os.environ["MSGR_NO_CEXT"] = "1"
    try:
        mods = []
        for name, path in (("msgr.crc", msgr_crc.__file__), ("msgr._cwire", _cwire.__file__)):
            spec = importlib.util.spec_from_file_location(f"_fallback_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            if name == "msgr.crc":   # let the _cwire copy bind to the fallback crc
                sys.modules["msgr.crc"] = msgr.crc = mod
            mods.append(mod)
        return mods[1]
    finally:
        sys.modules["msgr.crc"] = msgr.crc = saved_mod
        if saved_env is None:
            os.environ.pop("MSGR_NO_CEXT")
        else:
            os.environ["MSGR_NO_CEXT"] = saved_env


FALLBACK = _load_fallback()
WIRES = {"default": _cwire, "fallback": FALLBACK}


@pytest.fixture(params=sorted(WIRES))
def w(request):
    return WIRES[request.param]


def test_backends():
    assert FALLBACK.BACKEND == "crcmod"
    assert _cwire.BACKEND == msgr_crc.BACKEND
    if lib is not None and os.environ.get("MSGR_NO_CEXT") != "1":
        assert _cwire.BACKEND.startswith("c-")


MAUTH_FIELDS = (1, 0, 17, 127, 1, 60, 0, 0, 0, 8, -1, 1, 0)
MAUTH_HEADER = bytes.fromhex(
    "0100000000000000" "0000000000000000" "1100" "7f00" "0100" "3c000000" "00000000" "00000000"
    "0000" "08" "ffffffffffffffff" "0100" "0000" "694babe2")
AUTH_REPLY_HEADER = bytes.fromhex(
    "010000000000000000000000000000001200c4000100180000000000000000000000000001000000000000000001000000"
    "71f3a0f8")


def test_real_mauth_header(w):
    assert w.pack_header(*MAUTH_FIELDS) == MAUTH_HEADER
    assert w.parse_header(MAUTH_HEADER) == MAUTH_FIELDS + (0xE2AB4B69,)
    assert w.header_crc(MAUTH_HEADER) == 0xE2AB4B69


def test_real_auth_reply_header(w):
    assert w.parse_header(AUTH_REPLY_HEADER) == (1, 0, 18, 196, 1, 24, 0, 0, 0, 1, 0, 1, 0, 0xF8A0F371)


u8, u16, u32, u64 = (st.integers(0, 2**b - 1) for b in (8, 16, 32, 64))
s64 = st.integers(-(2**63), 2**63 - 1)
header_fields = st.tuples(u64, u64, u16, u16, u16, u32, u32, u32, u16, u8, s64, u16, u16)


@settings(max_examples=200, deadline=None)
@given(fields=header_fields, pad=st.integers(0, 9))
def test_header_round_trip(fields, pad):
    a = _cwire.pack_header(*fields)
    assert FALLBACK.pack_header(*fields) == a and len(a) == 53
    crc = struct.unpack_from("<I", a, 49)[0]
    assert crc == msgr_crc.crc32c(0, a[:49])
    buf = bytearray(b"\xaa" * pad + a + b"\x55")
    for wire in WIRES.values():
        for b in (a, buf, memoryview(buf), bytes(buf)):
            off = 0 if b is a else pad
            assert wire.parse_header(b, off) == fields + (crc,)


@pytest.mark.skipif(lib is None, reason="msgr._fastpath not built")
@settings(max_examples=100, deadline=None)
@given(fields=header_fields)
def test_c_one_call_parse(fields):
    """The C parse+verify entry point (used by the scanner) agrees with the struct parse."""
    h = _cwire.pack_header(*fields)
    out = ffi.new("uint64_t[14]")
    assert lib.msgr_parse_header(h, 53, 0, 1, out) == 0
    got = list(out)
    got[10] = got[10] - (1 << 64) if got[10] >= 1 << 63 else got[10]
    assert tuple(got) == _cwire.parse_header(h)
    assert lib.msgr_parse_header(h, 52, 0, 1, out) == -1
    assert lib.msgr_parse_header(h + b"x", 54, 2, 1, out) == -1
    bad = bytes([h[0] ^ 1]) + h[1:]
    assert lib.msgr_parse_header(bad, 53, 0, 1, out) == -2
    assert lib.msgr_parse_header(bad, 53, 0, 0, out) == 0
    dst = ffi.new("char[53]")
    c_fields = list(fields)
    c_fields[10] &= (1 << 64) - 1
    lib.msgr_pack_header(dst, *c_fields)
    assert ffi.unpack(dst, 53) == h


@pytest.mark.skipif(lib is None, reason="msgr._fastpath not built")
@settings(max_examples=100, deadline=None)
@given(f=st.tuples(u32, u32, u32, u64, u8), new=st.booleans())
def test_c_footer_entry_points(f, new):
    size = 21 if new else 13
    dst = ffi.new("char[]", size)
    lib.msgr_pack_footer(dst, *f, int(new))
    a = ffi.unpack(dst, size)
    assert a == _cwire.pack_footer(*f, new_format=new)
    out = ffi.new("uint64_t[5]")
    assert lib.msgr_parse_footer(a, size, 0, int(new), out) == 0
    assert tuple(out) == _cwire.parse_footer(a, 0, new)
    assert lib.msgr_parse_footer(a, size - 1, 0, int(new), out) == -1


def test_header_short(w):
    with pytest.raises(ShortBufferError) as ei:
        w.parse_header(MAUTH_HEADER[:52])
    assert (ei.value.need, ei.value.have) == (53, 52)
    with pytest.raises(ShortBufferError) as ei:
        w.parse_header(MAUTH_HEADER, 10)
    assert ei.value.have == 43
    with pytest.raises(ShortBufferError):
        w.parse_header(b"", 100)
    with pytest.raises(ValueError):
        w.parse_header(MAUTH_HEADER, -53)


@pytest.mark.parametrize("pos", [0, 16, 36, 37, 48, 49, 52])
def test_header_bad_crc(w, pos):
    bad = bytearray(MAUTH_HEADER)
    bad[pos] ^= 0x40
    if pos < 49:
        with pytest.raises(BadCrcError) as ei:
            w.parse_header(bad)
        assert ei.value.expected == 0xE2AB4B69
        assert ei.value.actual == msgr_crc.crc32c(0, bytes(bad[:49]))
    else:  # the crc field itself is corrupted
        with pytest.raises(BadCrcError) as ei:
            w.parse_header(bad)
        assert ei.value.actual == 0xE2AB4B69
    assert w.parse_header(bad, check_crc=False)[0] == (1 if pos != 0 else 0x41)


@pytest.mark.parametrize("i,value", [(2, 1 << 16), (9, 256), (5, 1 << 32), (0, -1), (10, 1 << 64),
                                     (10, -(1 << 63) - 1), (12, -1)])
def test_pack_header_out_of_range(w, i, value):
    fields = list(MAUTH_FIELDS)
    fields[i] = value
    with pytest.raises(OverflowError):
        w.pack_header(*fields)


def test_src_num_unsigned_spelling(w):
    fields = list(MAUTH_FIELDS)
    fields[10] = (1 << 64) - 1       # same bits as -1
    assert w.pack_header(*fields) == MAUTH_HEADER


@settings(max_examples=100, deadline=None)
@given(f=st.tuples(u32, u32, u32, u64, u8), new=st.booleans())
def test_footer_round_trip(f, new):
    a = _cwire.pack_footer(*f, new_format=new)
    assert a == FALLBACK.pack_footer(*f, new_format=new)
    assert len(a) == (21 if new else 13)
    want = f if new else f[:3] + (0, f[4])
    for wire in WIRES.values():
        assert wire.parse_footer(a, 0, new) == want
        assert wire.parse_footer(b"zz" + a, 2, new) == want
        with pytest.raises(ShortBufferError):
            wire.parse_footer(a[:-1], 0, new)


def test_footer_real_layout(w):
    assert w.pack_footer(0x35A7635B, 0, 0, 0, 1) == bytes.fromhex("5b63a735" + "00" * 16 + "01")
    assert w.pack_footer(0x35A7635B, 0, 0, 99, 1, False) == bytes.fromhex("5b63a735" + "00" * 8 + "01")
    with pytest.raises(OverflowError):
        w.pack_footer(0, 0, 0, 0, 256)


addr136 = st.binary(min_size=136, max_size=136)
old_fields = st.tuples(u64, u64, u16, u16, u16, u32, u32, u32, u16, u8, s64, addr136, u8, s64,
                       addr136, u32)


def _c_pack_old(f) -> bytes:
    nums = list(f[:11]) + [f[12], f[13], f[15]]
    nums = [n + (1 << 64) if n < 0 else n for n in nums]
    dst = ffi.new("char[334]")
    lib.msgr_pack_header_old(dst, ffi.new("uint64_t[14]", nums), f[11], f[14])
    return ffi.unpack(dst, 334)


@settings(max_examples=100, deadline=None)
@given(f=old_fields)
def test_old_header_round_trip(f):
    a = _cwire.pack_header_old(*f)
    assert a == FALLBACK.pack_header_old(*f) and len(a) == 334
    crc = msgr_crc.crc32c(0, a[:330])
    assert a[330:] == struct.pack("<I", crc)
    for wire in WIRES.values():
        assert wire.parse_header_old(a) == f + (crc,)
    if lib is not None:
        assert _c_pack_old(f) == a
        out = ffi.new("uint64_t[15]")
        assert lib.msgr_parse_header_old(a, 334, 0, 1, out) == 0
        assert out[14] == crc and out[0] == f[0] and out[13] == f[15]


def test_old_header_errors(w):
    f = (1, 2, 3, 4, 5, 6, 7, 8, 9, 8, -1, bytes(136), 8, -1, bytes(range(136)), 0)
    a = bytearray(w.pack_header_old(*f))
    with pytest.raises(ShortBufferError):
        w.parse_header_old(a[:333])
    a[200] ^= 1
    with pytest.raises(BadCrcError):
        w.parse_header_old(a)
    assert w.parse_header_old(a, check_crc=False)[14][10] == 11
    with pytest.raises(ValueError):
        w.pack_header_old(*f[:11], b"short", *f[12:])


# --- scan_frames -------------------------------------------------------------------------------

def _msg(seq, front, middle=b"", data=b"", new_footer=True, flags=1, src_num=-1):
    hdr = _cwire.pack_header(seq, 0, 17, 127, 1, len(front), len(middle), len(data), 0, 8, src_num, 1)
    c = msgr_crc.crc32c
    return b"\x07" + hdr + front + middle + data + _cwire.pack_footer(
        c(0, front), c(0, middle), c(0, data), 0xABCDEF if new_footer else 0, flags, new_footer)


frame_st = st.one_of(
    st.tuples(st.just("msg"), st.binary(max_size=300), st.binary(max_size=40), st.binary(max_size=500)),
    st.tuples(st.just("ack"), u64),
    st.tuples(st.sampled_from(["ka2", "ka2ack"]), u32, u32),
    st.tuples(st.just("ka")),
)


def _encode(frames, new_footer):
    out, expect = bytearray(), []
    for i, f in enumerate(frames):
        pos = len(out)
        if f[0] == "msg":
            b = _msg(i + 1, f[1], f[2], f[3], new_footer)
            fields = _cwire.parse_header(b, 1)
            c = msgr_crc.crc32c
            rec = (7, pos, len(b)) + fields + (c(0, f[1]), c(0, f[2]), c(0, f[3]),
                                                0xABCDEF if new_footer else 0, 1, pos + 54, 0)
        elif f[0] == "ack":
            b = b"\x08" + struct.pack("<Q", f[1])
            rec = (8, pos, 9, f[1]) + (0,) * 20
        elif f[0] == "ka":
            b = b"\x09"
            rec = (9, pos, 1) + (0,) * 21
        else:
            tag = 14 if f[0] == "ka2" else 15
            b = bytes([tag]) + struct.pack("<II", f[1], f[2])
            rec = (tag, pos, 9, f[1], f[2]) + (0,) * 19
        out += b
        expect.append(rec)
    return out, expect


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(frame_st, max_size=12), new_footer=st.booleans(), cut=st.integers(0, 10**6),
       lead=st.integers(0, 3))
def test_scan_matches_model(frames, new_footer, cut, lead):
    buf, expect = _encode(frames, new_footer)
    buf = bytearray(b"\x09" * lead) + buf     # keepalives before the offset we start from
    expect = [(r[0], r[1] + lead, r[2]) + r[3:22] + ((r[22] + lead) if r[0] == 7 else 0, 0)
              for r in expect]
    cut = lead + cut % (len(buf) - lead + 1)
    view = memoryview(buf)[:cut]
    complete = [r for r in expect if r[1] + r[2] <= cut]
    end = complete[-1][1] + complete[-1][2] if complete else lead
    for wire in WIRES.values():
        got = wire.scan_frames(view, lead, new_footer=new_footer)
        assert got == (_cwire.SCAN_NEED_MORE, end, complete)
        # the receive buffer itself with an end bound, twice (the C side keeps its view of it)
        for _ in range(2):
            assert wire.scan_frames(buf, lead, end=cut, new_footer=new_footer) == got
        if len(complete) > 1:
            got = wire.scan_frames(bytes(view), lead, new_footer=new_footer, max_frames=1)
            assert got == (_cwire.SCAN_FULL, complete[0][1] + complete[0][2], complete[:1])


def _corrupt(case):
    """A buffer: keepalive, then one bad frame; returns (buf, kwargs, expected status)."""
    good = b"\x09"
    front, middle, data = b"F" * 20, b"M" * 5, b"D" * 30
    m = bytearray(_msg(1, front, middle, data))
    kw = {}
    if case == "tag":
        m[0] = 0x63
        st_ = _cwire.SCAN_BAD_TAG
    elif case == "header":
        m[5] ^= 1
        st_ = _cwire.SCAN_BAD_HEADER_CRC
    elif case in ("front", "middle", "data"):
        m[54 + {"front": 0, "middle": 20, "data": 25}[case]] ^= 1
        st_ = {"front": _cwire.SCAN_BAD_FRONT_CRC, "middle": _cwire.SCAN_BAD_MIDDLE_CRC,
               "data": _cwire.SCAN_BAD_DATA_CRC}[case]
    elif case == "incomplete":
        m[-1] = 0
        st_ = _cwire.SCAN_NOT_COMPLETE
    elif case == "close":
        m[0] = 6
        st_ = _cwire.SCAN_CLOSE
    elif case == "large":
        kw = {"max_inline": 54}
        m = m[:40]                 # header incomplete: still NEED_MORE
        st_ = _cwire.SCAN_NEED_MORE
    return bytes(good + m), kw, st_


@pytest.mark.parametrize("case", ["tag", "header", "front", "middle", "data", "incomplete", "close",
                                  "large"])
def test_scan_stops_at_bad_frame(w, case):
    buf, kw, status = _corrupt(case)
    got = w.scan_frames(buf, **kw)
    assert got[0] == status and got[1] == 1 and [r[0] for r in got[2]] == [9]
    if status < 0:
        err = w.scan_error(buf, 1, status)
        assert isinstance(err, DecodeError)
        if status == _cwire.SCAN_BAD_TAG:
            assert isinstance(err, BadTagError)
        elif status != _cwire.SCAN_NOT_COMPLETE:
            assert isinstance(err, BadCrcError) and err.expected != err.actual


def test_scan_large_and_crc_switches(w):
    m = bytearray(_msg(1, b"F" * 20, b"", b"D" * 100))
    assert w.scan_frames(m, max_inline=119)[:2] == (_cwire.SCAN_LARGE, 0)
    assert w.scan_frames(m[:60], max_inline=119)[:2] == (_cwire.SCAN_LARGE, 0)  # body not here yet
    assert w.scan_frames(m, max_inline=120)[:2] == (_cwire.SCAN_NEED_MORE, len(m))
    m[54 + 20] ^= 1                                             # corrupt the data
    assert w.scan_frames(m)[0] == _cwire.SCAN_BAD_DATA_CRC
    assert w.scan_frames(m, crc_data=False)[0] == _cwire.SCAN_NEED_MORE
    m[-1] = 1 | 2                                               # NOCRC: sender skipped data crc
    assert w.scan_frames(m)[0] == _cwire.SCAN_NEED_MORE
    m[5] ^= 1                                                   # header crc off too
    assert w.scan_frames(m)[0] == _cwire.SCAN_BAD_HEADER_CRC
    assert w.scan_frames(m, crc_header=False)[0] == _cwire.SCAN_NEED_MORE
    with pytest.raises(ValueError):
        w.scan_frames(m, max_frames=0)


def test_scan_old_footer_and_signed_src(w):
    m = _msg(7, b"hello", new_footer=False, src_num=-5)
    st_, end, recs = w.scan_frames(m, new_footer=False)
    assert (st_, end, len(recs)) == (_cwire.SCAN_NEED_MORE, len(m), 1)
    r = recs[0]
    assert r[_cwire.R_HEADER] == 7 and r[_cwire.R_HEADER + 10] == -5 and r[_cwire.R_SIG] == 0
    assert bytes(m[r[_cwire.R_FRONT_OFFSET]:r[_cwire.R_FRONT_OFFSET] + 5]) == b"hello"
    # read with the wrong footer size, the frame looks longer than the buffer
    assert w.scan_frames(m, new_footer=True)[:2] == (_cwire.SCAN_NEED_MORE, 0)


_REGIONS = ("tag", "header", "lengths", "header_crc", "front", "middle", "data", "footer_crc", "footer_flags")


def _damage(buf, recs, frame, region, at, value):
    """Overwrite one byte of ``region`` of frame ``frame`` (a message's part, or anywhere)."""
    r = recs[frame % len(recs)]
    pos, size = r[1], r[2]
    if r[0] != 7 or region == "tag":
        buf[pos + (at % size if region != "tag" else 0)] = value
        return
    f0, fl, ml, dl = r[22], r[8], r[9], r[10]
    spans = {"header": (pos + 1, 49), "lengths": (pos + 23, 12), "header_crc": (pos + 50, 4),
             "front": (f0, fl), "middle": (f0 + fl, ml), "data": (f0 + fl + ml, dl),
             "footer_crc": (f0 + fl + ml + dl, 12), "footer_flags": (pos + size - 1, 1)}
    start, n = spans[region]
    if n:
        buf[start + at % n] = value


def _agree(buf, **kw):
    """C and pure scanners: same status, resume point and records, the same typed error."""
    got = _cwire.scan_frames(buf, 0, **kw)
    assert got == FALLBACK.scan_frames(buf, 0, **kw)
    assert got == FALLBACK.scan_frames(bytes(buf[:kw["end"]]), 0, **{**kw, "end": None})
    # the receive path's form: a pinned view, positional switches, message count and body bytes
    flags = _cwire.scan_flags(kw["crc_header"], kw["crc_data"], kw["new_footer"])
    args = (0, kw["end"], flags, kw["max_inline"], kw["max_frames"])
    full = _cwire.scan(_cwire.pin(buf), *args)
    msgs = [r for r in got[2] if r[0] == 7]
    assert full == got + (len(msgs), sum(r[8] + r[9] + r[10] for r in msgs))
    assert full == FALLBACK.scan(FALLBACK.pin(buf), *args)
    status, end, _recs = got
    if status < 0:
        nf = kw["new_footer"]
        a, b = _cwire.scan_error(buf, end, status, nf), FALLBACK.scan_error(buf, end, status, nf)
        assert (type(a), str(a)) == (type(b), str(b))
    return got


@settings(max_examples=500, deadline=None)
@given(frames=st.lists(frame_st, min_size=1, max_size=6), new_footer=st.booleans(),
       damage=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(_REGIONS), st.integers(0, 10**6),
                                 st.integers(0, 255)), min_size=1, max_size=2),
       crc_header=st.booleans(), crc_data=st.booleans())
def test_scan_c_and_pure_agree_on_damaged_streams(frames, new_footer, damage, crc_header, crc_data):
    """The receive rules as the pure scanner states them, checked against the C scanner on valid
    streams with a byte overwritten in any part of a frame (tag, header, lengths, CRCs, segments,
    footer flags), under both CRC switches and footer sizes."""
    buf, recs = _encode(frames, new_footer)
    for d in damage:
        _damage(buf, recs, *d)
    _agree(buf, end=len(buf), crc_header=crc_header, crc_data=crc_data, new_footer=new_footer,
           max_inline=1 << 20, max_frames=64)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frame_st, min_size=1, max_size=8), new_footer=st.booleans(), cut=st.integers(0, 10**6),
       max_inline=st.sampled_from([0, 20, 300, 1 << 20]), max_frames=st.integers(1, 70),
       damage=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(_REGIONS), st.integers(0, 10**6),
                                 st.integers(0, 255)), max_size=1))
def test_scan_c_and_pure_agree_on_cut_streams_and_limits(frames, new_footer, cut, max_inline, max_frames,
                                                         damage):
    """The same on streams cut anywhere, with any body limit (LARGE) and record count (FULL)."""
    buf, recs = _encode(frames, new_footer)
    for d in damage:
        _damage(buf, recs, *d)
    _agree(buf, end=cut % (len(buf) + 1), crc_header=True, crc_data=True, new_footer=new_footer,
           max_inline=max_inline, max_frames=max_frames)


def test_scan_scratch_is_per_thread():
    """Threads scanning at once (the C call runs without the GIL) each get their own records."""
    import threading
    bufs = [bytes(_encode([("ack", k)] * 5 + [("msg", bytes([k]) * 50, b"", b"")], True)[0]) for k in range(4)]
    want = [FALLBACK.scan_frames(b) for b in bufs]
    bad: list = []

    def run(k):
        for _ in range(2000):
            if _cwire.scan_frames(bufs[k]) != want[k]:
                bad.append(k)
                return
    ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_scan_end_bound_is_checked(w):
    buf = b"\x09" * 10
    assert w.scan_frames(buf, 2, end=5)[:2] == (_cwire.SCAN_NEED_MORE, 5)
    with pytest.raises(ValueError):
        w.scan_frames(buf, 0, end=11)
    assert w.scan_frames(buf, 0, max_frames=100)[:2] == (_cwire.SCAN_NEED_MORE, 10)


def test_scan_random_garbage_never_crashes():
    rnd = random.Random(7)
    for _ in range(300):
        buf = bytes(rnd.choice([7, 8, 9, 14, 15, 6, 0, 255]) if rnd.random() < 0.3 else rnd.randrange(256)
                    for _ in range(rnd.randrange(200)))
        assert _cwire.scan_frames(buf) == FALLBACK.scan_frames(buf)


# --- real Ceph 16.2.15 monitor traffic (tests/data, recorded by tests/record_real_mon.py) -------

DATA = os.path.join(os.path.dirname(__file__), "data")


def _real_rx(name):
    """(bytes the mon sent after the handshake, the rx events that make them up)."""
    import json
    with open(os.path.join(DATA, f"{name}.json")) as f:
        meta = json.load(f)
    with open(os.path.join(DATA, f"{name}.rx.bin"), "rb") as f:
        rx = f.read()
    events = [e for e in meta["events"] if e["dir"] == "rx"]
    handshake = sum(len(e["hex"]) // 2 for e in events if e["kind"] in ("server_identify", "connect_reply"))
    frames = [e for e in events if e["kind"] not in ("server_identify", "connect_reply")]
    assert b"".join(bytes.fromhex(e["hex"]) for e in frames) == rx[handshake:]
    return rx[handshake:], frames, meta


@pytest.mark.parametrize("name", ["real_mon_session", "real_mon_session_old_footer"])
def test_scan_real_mon_stream(w, name):
    stream, frames, meta = _real_rx(name)
    new_footer = meta["footer_size"] == 21
    status, end, recs = w.scan_frames(stream, new_footer=new_footer)
    assert (status, end, len(recs)) == (_cwire.SCAN_NEED_MORE, len(stream), len(frames))
    c = msgr_crc.crc32c
    for r, e in zip(recs, frames, strict=True):
        raw = bytes.fromhex(e["hex"])
        assert r[_cwire.R_TAG] == raw[0] and r[_cwire.R_LEN] == len(raw)
        if e["kind"] == "keepalive2_ack":
            assert [r[_cwire.R_STAMP_SEC], r[_cwire.R_STAMP_NSEC]] == meta["keepalive_stamp"]
            continue
        hdr = r[_cwire.R_HEADER:_cwire.R_HEADER + 14]
        assert hdr == w.parse_header(bytes.fromhex(e["header"]))
        assert (hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[11]) == (
            e["seq"], e["tid"], e["type"], e["priority"], e["version"], e["compat_version"])
        assert [hdr[9], hdr[10]] == e["src"]
        off = r[_cwire.R_FRONT_OFFSET]
        assert stream[off:off + hdr[5]] == bytes.fromhex(e["front"])
        assert r[_cwire.R_DATA_CRC] == c(0, bytes.fromhex(e["data"]))
        assert r[_cwire.R_FOOTER_FLAGS] == e["footer_flags"]


def test_scan_real_mon_stream_fed_in_pieces():
    """A receiver that resumes from `end` after each recv sees every frame exactly once."""
    stream, frames, _ = _real_rx("real_mon_session")
    for wire in WIRES.values():
        for step in (1, 7, 64):
            got, start = [], 0
            for cut in range(step, len(stream) + step, step):
                status, start, recs = wire.scan_frames(stream[:cut], start)
                assert status == _cwire.SCAN_NEED_MORE
                got += [r[_cwire.R_TAG] for r in recs]
            assert start == len(stream)
            assert got == [bytes.fromhex(e["hex"])[0] for e in frames]
