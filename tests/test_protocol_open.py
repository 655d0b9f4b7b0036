"""OPEN state: framing bytes (PROTOCOL.md §5.5), bulk traffic with random chunking, CRC modes, old header/footer,
throttles, keepalives, acks, direct reads, and garbage -> Fault."""
from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_support import TEST_TYPE, delivered, make_msg, msg_id

from msgr import _cwire
from msgr.config import Config
from msgr.crc import crc32c
from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MSG_AUTH, MSGR_KEEPALIVE2, NOSRCADDR, RECONNECT_SEQ
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.actions import Deliver, Fault, SessionClosed, TimerKind
from msgr.protocol.outq import Framer
from msgr.protocol.protocol_v1 import RBUF_IDLE, ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet
from msgr.throttle import Throttle
from msgr.wire import Tag

A_ADDR = EntityAddr.parse("v1:10.0.0.1:6800/11")
B_ADDR = EntityAddr.parse("v1:10.0.0.2:6800/22")


def _pair(seed=0, max_chunk=1 << 16, policy=None, features=CEPH_FEATURES_ALL_PACIFIC, config=None, release=True,
          b_policy=None):
    net = WireNet(seed=seed, max_chunk=max_chunk, release_throttles=release)
    pol = policy or Policy.lossless_peer()
    pol.features_supported = features
    bpol = b_policy or pol.copy()
    bpol.features_supported = features
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, config=config, default_policy=pol, seed=seed))
    b = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, config=config, default_policy=bpol, seed=seed + 1))
    p = net.connect(a, B_ADDR, EntityName.TYPE_OSD)
    server = lambda: next((x for x in net.protos if x.host is b and x.is_connected()), None)  # noqa: E731
    net.run(until=lambda: p.is_connected() and server() is not None)
    return net, a, b, p, server()


# --- framing -------------------------------------------------------------------------------------------------------
def test_frame_matches_worked_example_5_6():
    m = Message()
    m.header.type, m.header.priority, m.header.tid, m.header.seq = 17, 127, 0, 1
    m.front = bytes(range(60))
    out: list = []
    n = Framer(CEPH_FEATURES_ALL_PACIFIC, True, True, 8, -1).frame(m, out)
    wire = b"".join(out)
    head49 = struct.pack("<QQHHHIIIHBqHH", 1, 0, 17, 127, 1, 60, 0, 0, 0, 8, -1, 1, 0)
    expect = (b"\x07" + head49 + struct.pack("<I", crc32c(0, head49)) + m.front
              + struct.pack("<IIIQB", crc32c(0, m.front), 0, 0, 0, 1))
    assert wire == expect and n == len(wire) == 1 + 53 + 60 + 21
    assert out[1] is m.front   # segments go out as-is


def test_header_crc_matches_real_client_mauth():
    m = Message()
    m.header.type, m.header.priority, m.header.seq = 17, 127, 1
    m.front = bytes(60)
    out: list = []
    Framer(CEPH_FEATURES_ALL_PACIFIC, True, True, 8, -1).frame(m, out)
    assert out[0][50:54] == bytes.fromhex("694babe2")


def test_old_header_and_footer_without_nosrcaddr_and_msg_auth():
    feats = CEPH_FEATURES_ALL_PACIFIC & ~NOSRCADDR & ~MSG_AUTH
    m = make_msg(5, data_len=10)
    m.header.seq = 1
    out: list = []
    Framer(feats, True, True, 4, 1, A_ADDR.encode_legacy()).frame(m, out)
    assert len(out[0]) == 1 + 334 and len(out[-1]) == 13
    net, a, b, p, s = _pair(features=feats)
    assert s._header_size == 334 and s._footer_size == 13
    for i in range(20):
        net.send(p, make_msg(i, data_len=i * 100))
    net.run()
    assert [msg_id(m) for m in net.messages(b)] == list(range(20))


# --- bulk traffic ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("crc", [True, False])
def test_10000_messages_each_way_random_chunking(crc):
    cfg = Config(ms_crc_data=crc, ms_crc_header=crc)
    net, a, b, p, s = _pair(seed=7, max_chunk=70_000, config=cfg)
    rng = net.rng
    sizes = [0, 1, 100, 4096, 9000, 70_000, 300_000]
    sent_a, sent_b = [], []
    for i in range(10_000):
        d = rng.choice(sizes) if i % 50 == 0 else rng.choice(sizes[:4])
        m = make_msg(i, data_len=d, middle_len=(i % 3))
        sent_a.append((i, d))
        net.send(p, m)
        m2 = make_msg(i, data_len=rng.choice(sizes[:4]))
        sent_b.append((i, len(m2.data)))
        net.send(s, m2)
    net.run()
    got_b = [(msg_id(m), len(m.data)) for m in net.messages(b)]
    got_a = [(msg_id(m), len(m.data)) for m in net.messages(a)]
    assert got_b == sent_a and got_a == sent_b
    assert all(bytes(m.middle) == bytes([msg_id(m) & 0xFF]) * (msg_id(m) % 3) for m in net.messages(b))
    assert not p._outq.sent and not s._outq.sent          # everything acked
    assert p.stats["faults"] == s.stats["faults"] == 0


def test_large_segment_is_read_into_its_own_buffer():
    net, a, b, p, s = _pair()
    p.send_message(make_msg(1, data_len=200_000), 0)
    wire = b"".join(bytes(x) for x in p.take_output())
    s.receive_data(wire[:1000], 0)
    buf = s.get_buffer()
    assert s.state is State.OPEN_MESSAGE_READ_DATA and len(buf) == 200_000 - (1000 - 1 - 53 - 8)
    acts = s.receive_data(wire[1000:], 0)
    (d,) = delivered(acts)
    assert isinstance(d.data, bytearray) and d.data == bytes([7]) * 200_000


def test_one_cumulative_ack_per_receive_batch_and_many_messages_per_take_output():
    net, a, b, p, s = _pair()
    for i in range(5):
        p.send_message(make_msg(i), 0)
    out = p.take_output()
    # all five in one list: tag+header, front (8 bytes), footer each; the C batch framer puts the
    # whole run in one buffer, the per-message framers hand out three buffers a message
    assert sum(map(len, out)) == 5 * (54 + 8 + 21)
    assert len(out) in (1, 5 * 3)
    s.receive_data(b"".join(bytes(x) for x in out), 0)
    reply = b"".join(bytes(x) for x in s.take_output())
    assert reply == b"\x08" + struct.pack("<Q", p.out_seq)
    p.receive_data(reply, 0)
    assert not p._outq.sent


def test_lossy_session_never_acks():
    net, a, b, p, s = _pair(policy=Policy.lossy_client(), b_policy=Policy.stateless_server())
    p.send_message(make_msg(1), 0)
    s.receive_data(b"".join(bytes(x) for x in p.take_output()), 0)
    assert not s.has_output() and s.in_seq == p.out_seq


@pytest.mark.parametrize("ka2", [True, False])
def test_keepalives(ka2):
    feats = CEPH_FEATURES_ALL_PACIFIC if ka2 else CEPH_FEATURES_ALL_PACIFIC & ~MSGR_KEEPALIVE2
    net, a, b, p, s = _pair(features=feats)
    p.send_keepalive(0)
    out = b"".join(bytes(x) for x in p.take_output())
    assert out[0] == (Tag.KEEPALIVE2 if ka2 else Tag.KEEPALIVE) and len(out) == (9 if ka2 else 1)
    s.receive_data(out, 55)
    assert s.last_keepalive_us == 55
    echo = b"".join(bytes(x) for x in s.take_output())
    if ka2:
        assert echo == b"\x0f" + out[1:]
        p.receive_data(echo, 66)
        assert p.last_keepalive_ack_us == 66 and p.last_keepalive_ack_stamp == a.wall_clock()[:1] + (0,)
    else:
        assert echo == b""


def test_duplicate_seq_is_dropped_without_fault():
    net, a, b, p, s = _pair()
    p.send_message(make_msg(1), 0)
    wire = b"".join(bytes(x) for x in p.take_output())
    assert len(delivered(s.receive_data(wire, 0))) == 1
    assert s.receive_data(wire, 0) == [] and s.state is State.OPEN


# --- throttles ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["messages", "bytes", "dispatch"])
def test_throttle_blocks_then_resumes(which):
    bpol = Policy.lossless_peer()
    if which == "messages":
        bpol.throttler_messages = Throttle("msgs", 3)
    elif which == "bytes":
        bpol.throttler_bytes = Throttle("bytes", 3000)
    net, a, b, p, s = _pair(b_policy=bpol, release=False)
    if which == "dispatch":
        b.dispatch_throttle.reset_max(3000)
    for i in range(10):
        net.send(p, make_msg(i, data_len=992))   # 1000 bytes of payload each
    net.run(until=lambda: not s.wants_read)
    net.run(max_time_us=10_000)
    assert len(net.messages(b)) == 3 and not s.wants_read and s.stats["throttle_waits"] >= 1
    assert s.state is State.OPEN_MESSAGE_THROTTLE_MESSAGE or s.state.name.startswith("OPEN_MESSAGE_THROTTLE")
    while len(net.messages(b)) < 10:
        before = len(net.messages(b))
        net.held.pop(0)._release_throttles()   # the dispatcher finished one: the next can be read
        net.run(until=lambda before=before: len(net.messages(b)) > before)
    for m in net.held:
        m._release_throttles()
    net.run()
    assert s.wants_read and s.state is State.OPEN
    assert [msg_id(m) for m in net.messages(b)] == list(range(10))


def test_fault_mid_message_releases_throttles():
    bpol = Policy.lossless_peer()
    bpol.throttler_bytes = Throttle("bytes", 10**6)
    net, a, b, p, s = _pair(b_policy=bpol)
    p.send_message(make_msg(1, data_len=50_000), 0)
    wire = b"".join(bytes(x) for x in p.take_output())
    s.receive_data(wire[:500], 0)
    assert bpol.throttler_bytes.current == 50_008 and b.dispatch_throttle.current == 50_008
    s.receive_data(b"", 0)
    assert bpol.throttler_bytes.current == 0 and b.dispatch_throttle.current == 0


# --- garbage in OPEN --------------------------------------------------------------------------------------------------
def _frame(seq=1, front=b"abc", fix=None):
    hdr = bytearray(_cwire.pack_header(seq, 0, TEST_TYPE, 127, 1, len(front), 0, 0, 0, 4, 1, 1, 0))
    ftr = bytearray(_cwire.pack_footer(crc32c(0, front), 0, 0, 0, 1, True))
    if fix:
        fix(hdr, ftr)
    return b"\x07" + bytes(hdr) + front + bytes(ftr)


def _bad_len(h, f):
    h[22:26] = struct.pack("<I", 1 << 30)
    h[49:53] = struct.pack("<I", crc32c(0, bytes(h[:49])))


CASES = {
    "bad tag": b"\x63",
    "bad header crc": _frame(fix=lambda h, f: h.__setitem__(49, h[49] ^ 1)),
    "front_len above max": _frame(fix=_bad_len),
    "footer not complete": _frame(fix=lambda h, f: f.__setitem__(20, 0)),
    "bad front crc": _frame(fix=lambda h, f: f.__setitem__(0, f[0] ^ 1)),
    "truncated frame then EOF": _frame()[:30],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lossy", [True, False])
def test_garbage_in_open_faults(case, lossy):
    pol = Policy.lossy_client() if lossy else Policy.lossless_peer()
    net, a, b, p, s = _pair(policy=pol, b_policy=Policy.stateless_server() if lossy else None)
    acts = s.receive_data(CASES[case], 0)
    if case.startswith("truncated"):
        assert not acts
        acts = s.receive_data(b"", 0)
    faults = [x for x in acts if isinstance(x, Fault)]
    assert len(faults) == 1 and not [x for x in acts if isinstance(x, Deliver)]
    assert (s.state is State.CLOSED) == lossy
    if lossy:
        assert any(isinstance(x, SessionClosed) for x in acts)


def test_front_len_above_max_allocates_nothing():
    cfg = Config(ms_max_message_front_len=100)
    net, a, b, p, s = _pair(config=cfg)
    acts = s.receive_data(_frame(front=bytes(101)), 0)
    assert any(isinstance(x, Fault) and "front_len" in x.reason for x in acts)


@settings(max_examples=80, deadline=None)
@given(junk=st.binary(min_size=1, max_size=400))
def test_random_bytes_in_open_never_raise(junk):
    host = FakeHost(EntityName.osd(2), B_ADDR, default_policy=Policy.lossless_peer())
    s = ProtocolV1(host)
    s.start_accept(EntityAddr.parse("v1:10.0.0.1:40000/0"), B_ADDR, 0)
    s.receive_data(b"ceph v027" + A_ADDR.encode_legacy(), 0)
    from test_protocol_support import connect_msg
    s.receive_data(connect_msg(host_type=4, proto=10, features=CEPH_FEATURES_ALL_PACIFIC & ~RECONNECT_SEQ), 0)
    assert s.state is State.OPEN
    s.receive_data(junk, 0)
    s.receive_data(b"", 0)
    s.take_output()


# --- batch fast path (OPEN -> complete frames in buffer -> dispatch) vs the state path -----------------------------
def _open_server(batch=True, policy=None, config=None, sent=5):
    """A server ProtocolV1 in OPEN (raw accept); ``batch`` False forces the per-state path."""
    host = FakeHost(EntityName.osd(2), B_ADDR, default_policy=policy or Policy.lossless_peer(), config=config)
    s = ProtocolV1(host)
    s.start_accept(EntityAddr.parse("v1:10.0.0.1:40000/0"), B_ADDR, 0)
    s.receive_data(b"ceph v027" + A_ADDR.encode_legacy(), 0)
    from test_protocol_support import connect_msg
    s.receive_data(connect_msg(host_type=4, proto=10, features=CEPH_FEATURES_ALL_PACIFIC & ~RECONNECT_SEQ), 0)
    assert s.state is State.OPEN and s._batch
    s._batch = batch
    for i in range(sent):   # something on the sent list for ACKs to trim
        s.send_message(make_msg(i), 0)
    s.take_output()
    return host, s


def _msg_frame(seq, front=b"", middle=b"", data=b"", bad=None):
    hdr = bytearray(_cwire.pack_header(seq, 7, TEST_TYPE, 127, 1, len(front), len(middle), len(data), 0, 4, 1, 1, 0))
    ftr = bytearray(_cwire.pack_footer(crc32c(0, front), crc32c(0, middle), crc32c(0, data), 0, 1, True))
    if bad == "header":
        hdr[49] ^= 1
    elif bad == "front":
        ftr[0] ^= 1
    elif bad == "middle":
        ftr[4] ^= 1
    elif bad == "data":
        ftr[8] ^= 1
    elif bad == "incomplete":
        ftr[20] = 0
    return b"\x07" + bytes(hdr) + front + middle + data + bytes(ftr)


def _feed(s, wire, chunks):
    """Feed ``wire`` in ``chunks`` (sizes, cycled); release throttles like a dispatcher; a comparable log."""
    log, off, i = [], 0, 0
    while off < len(wire) and s.state is not State.CLOSED:
        n = chunks[i % len(chunks)]
        i += 1
        for a in s.receive_data(wire[off:off + n], 1000 + i):
            if isinstance(a, Deliver):
                for m in a.msgs:
                    log.append(("D", m.header.seq, m.header.tid, bytes(m.front), bytes(m.middle), bytes(m.data),
                                m.footer.front_crc, m.footer.data_crc, m._recv_stamp_us, str(m.get_source())))
                    m._release_throttles()
            elif isinstance(a, Fault):
                log.append(("F", type(a.error).__name__, a.reason))
            else:
                log.append((type(a).__name__,))
        off += n
    out = b"".join(bytes(x) for x in s.take_output())
    return log, (s.state, s.in_seq, s.last_keepalive_us, s.last_keepalive_ack_us, s.last_keepalive_ack_stamp,
                 len(s._outq.sent), out, s.stats["msgs_in"])


_SIZES = [0, 1, 3, 100, 4096, 8200, 20_000]
_frame_st = st.one_of(
    st.tuples(st.just("msg"), st.integers(-2, 3), st.sampled_from(_SIZES), st.sampled_from(_SIZES[:4]),
              st.sampled_from(_SIZES)),
    st.tuples(st.just("ack"), st.integers(0, 7)),
    st.tuples(st.just("ka")),
    st.tuples(st.just("ka2"), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("ka2ack"), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)


def _wire(ops, bad=None):
    parts, seq = [], 0
    for k, op in enumerate(ops):
        if op[0] == "msg":
            seq = max(1, seq + op[1])
            parts.append(_msg_frame(seq, bytes([k & 0xFF]) * op[2], b"m" * op[3], bytes([seq & 0xFF]) * op[4]))
        elif op[0] == "ack":
            parts.append(b"\x08" + struct.pack("<Q", op[1]))
        elif op[0] == "ka":
            parts.append(b"\x09")
        else:
            parts.append(bytes([14 if op[0] == "ka2" else 15]) + struct.pack("<II", op[1], op[2]))
    if bad is not None:
        parts.insert(len(parts) // 2, _msg_frame(seq + 1, b"xy", b"", b"z", bad=bad) if bad != "tag" else b"\x63")
    return b"".join(parts)


@settings(max_examples=120, deadline=None)
@given(ops=st.lists(_frame_st, min_size=1, max_size=40),
       chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
       bad=st.sampled_from([None, None, "header", "front", "middle", "data", "incomplete", "tag"]))
def test_batch_path_matches_state_path(ops, chunks, bad):
    wire = _wire(ops, bad)
    _, fast = _open_server(batch=True)
    _, slow = _open_server(batch=False)
    got_fast, got_slow = _feed(fast, wire, chunks), _feed(slow, wire, chunks)
    assert got_fast == got_slow
    if bad is not None:
        assert any(x[0] == "F" for x in got_fast[0])


def test_batch_delivers_many_frames_from_one_scan():
    host, s = _open_server()
    calls = []
    orig = s._open_batch
    s._open_batch = lambda now, acts: calls.append(1) or orig(now, acts)
    wire = b"".join(_msg_frame(i, b"x" * 100) for i in range(1, 21))
    assert len(wire) < RBUF_IDLE               # one read of a quiet session's buffer
    acts = s.receive_data(wire, 0)
    assert [m.header.seq for m in delivered(acts)] == list(range(1, 21))
    assert len(calls) == 1 and s.state is State.OPEN and s.in_seq == 20


@pytest.mark.parametrize("bad", ["header", "front", "middle", "data", "incomplete", "tag"])
def test_bad_frame_mid_batch_faults_after_the_good_ones(bad):
    host, s = _open_server()
    wire = b"".join(_msg_frame(i, b"f" * 10, b"m", b"d" * 5) for i in range(1, 6))
    wire += _msg_frame(6, b"f" * 10, b"m", b"d" * 5, bad=bad) if bad != "tag" else b"\x63"
    wire += b"".join(_msg_frame(i, b"f") for i in range(7, 10))
    acts = s.receive_data(wire, 0)
    assert [m.header.seq for m in delivered(acts)] == [1, 2, 3, 4, 5]
    (f,) = [a for a in acts if isinstance(a, Fault)]
    expect = {"header": "BadCrcError", "front": "BadCrcError", "middle": "BadCrcError", "data": "BadCrcError",
              "incomplete": "DecodeError", "tag": "BadTagError"}[bad]
    assert type(f.error).__name__ == expect
    if expect == "BadCrcError":
        assert {"header": "ceph_msg_header"}.get(bad, bad) in str(f.error)
    assert acts.index(f) > max(i for i, a in enumerate(acts) if isinstance(a, Deliver))
    assert s.in_seq == 5 and s.stats["faults"] == 1


def test_dup_seqs_in_one_batch_are_dropped_and_release_throttles():
    pol = Policy.lossless_peer()
    pol.throttler_bytes = Throttle("bytes", 10**6)
    pol.throttler_messages = Throttle("msgs", 100)
    host, s = _open_server(policy=pol)
    seqs = [1, 2, 2, 3, 1, 4, 4, 5]
    acts = s.receive_data(b"".join(_msg_frame(q, b"p" * 10) for q in seqs), 0)
    got = delivered(acts)
    assert [m.header.seq for m in got] == [1, 2, 3, 4, 5] and s.stats["faults"] == 0
    assert pol.throttler_messages.current == 5 and pol.throttler_bytes.current == 50
    assert host.dispatch_throttle.current == 50
    for m in got:
        m._release_throttles()
    assert pol.throttler_messages.current == pol.throttler_bytes.current == host.dispatch_throttle.current == 0


@pytest.mark.parametrize("which", ["messages", "bytes", "dispatch"])
def test_throttle_stops_the_batch_at_that_frame(which):
    pol = Policy.lossless_peer()
    if which == "messages":
        pol.throttler_messages = Throttle("msgs", 3)
    elif which == "bytes":
        pol.throttler_bytes = Throttle("bytes", 300)
    host, s = _open_server(policy=pol)
    if which == "dispatch":
        host.dispatch_throttle.reset_max(300)
    acts = s.receive_data(b"".join(_msg_frame(i, b"q" * 100) for i in range(1, 11)), 0)
    got = delivered(acts)
    assert [m.header.seq for m in got] == [1, 2, 3]
    assert not s.wants_read and s.state.name.startswith("OPEN_MESSAGE_THROTTLE")
    assert s.stats["throttle_waits"] == 1
    assert [type(a).__name__ for a in acts].count("ArmTimer") == 1
    seen = [1, 2, 3]
    while len(seen) < 10:
        got.pop(0)._release_throttles()
        acts = s.on_timer(TimerKind.THROTTLE_RETRY, 5)
        more = delivered(acts)
        got += more
        seen += [m.header.seq for m in more]
    assert seen == list(range(1, 11))
    for m in got:
        m._release_throttles()
    assert s.state is State.OPEN and s.wants_read and s._rpos == s._rend == 0


def _throttled_run(batch, wire, chunks, maxes, hold, bounds=frozenset()):
    """Feed ``wire`` to a session with tight throttles, keeping the last ``hold`` messages
    undispatched; a step log of deliveries, throttle levels and states, and whether some read
    ended at an offset not in ``bounds`` (a frame cut by the receive buffer's end)."""
    pol = Policy.lossless_peer()
    pol.throttler_messages, pol.throttler_bytes = Throttle("msgs", maxes[0]), Throttle("bytes", maxes[1])
    host, s = _open_server(batch=batch, policy=pol)
    host.dispatch_throttle.reset_max(maxes[2])
    levels = lambda: (pol.throttler_messages.current, pol.throttler_bytes.current,  # noqa: E731
                      host.dispatch_throttle.current)
    log, held, off, i, cut = [], [], 0, 0, False
    while (off < len(wire) or not s.wants_read) and s.state is not State.CLOSED:
        if s.wants_read:
            buf = s.get_buffer()
            k = min(len(buf), chunks[i % len(chunks)], len(wire) - off)
            i += 1
            buf[:k] = wire[off:off + k]
            off += k
            cut = cut or off not in bounds
            acts = s.buffer_updated(k, i)
        else:
            while held:
                held.pop(0)._release_throttles()
            acts = s.on_timer(TimerKind.THROTTLE_RETRY, i)
        got = delivered(acts)
        log.append(([m.header.seq for m in got], levels(), s.state.name,
                    [type(a).__name__ for a in acts if not isinstance(a, Deliver)]))
        held += got
        while len(held) > hold:
            held.pop(0)._release_throttles()
    while held:
        held.pop(0)._release_throttles()
    return log, levels(), s.in_seq, cut


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 1, 50, 300, 9000]), min_size=1, max_size=30),
       maxes=st.tuples(st.integers(0, 6), st.integers(0, 900), st.integers(0, 900)),
       chunks=st.lists(st.integers(1, 20_000), min_size=1, max_size=4), hold=st.integers(0, 5))
def test_batch_path_matches_state_path_under_tight_throttles(sizes, maxes, chunks, hold):
    """Whole-scan throttle reservations admit exactly what message-by-message takes would: step by
    step when every frame is there at once; in order and all given back when frames arrive cut
    (the state path takes a message's throttles at its header, the batch path at its end)."""
    frames = [_msg_frame(q, b"f" * n) for q, n in enumerate(sizes, 1)]
    wire = b"".join(frames)
    bounds = frozenset(itertools.accumulate(map(len, frames)))
    fast, slow = (_throttled_run(b, wire, [len(wire)], maxes, hold, bounds) for b in (True, False))
    if not fast[3] and not slow[3]:
        assert fast == slow
    else:   # a read ended inside a frame (the receive buffer was full): the state path has taken
        # that message's throttles at its header, the batch path waits for the frame's end
        assert [q for step in fast[0] for q in step[0]] == [q for step in slow[0] for q in step[0]]
    assert fast[1] == (0, 0, 0) and fast[2] == len(sizes)   # every reservation given back
    fast, slow = (_throttled_run(b, wire, chunks, maxes, hold) for b in (True, False))
    assert [q for step in fast[0] for q in step[0]] == [q for step in slow[0] for q in step[0]]
    assert fast[1:3] == slow[1:3] == ((0, 0, 0), len(sizes))


def test_partial_small_frame_waits_in_open_then_completes():
    host, s = _open_server()
    wire = _msg_frame(1, b"a" * 3000) + _msg_frame(2, b"b" * 10)
    assert s.receive_data(wire[:1500], 0) == [] and s.state is State.OPEN
    acts = s.receive_data(wire[1500:], 0)
    assert [bytes(m.front[:1]) for m in delivered(acts)] == [b"a", b"b"]


def test_partial_frame_over_the_length_limit_faults_at_once():
    host, s = _open_server(config=Config(ms_max_message_front_len=100))
    acts = s.receive_data(_msg_frame(1, bytes(101))[:60], 0)
    assert any(isinstance(a, Fault) and "front_len" in a.reason for a in acts)


def test_fast_framer_matches_the_generic_framer_bytes():
    for feats in (CEPH_FEATURES_ALL_PACIFIC, CEPH_FEATURES_ALL_PACIFIC & ~MSG_AUTH):
        for crc_data in (True, False):
            m = make_msg(3, data_len=77, middle_len=5)
            m.header.seq, m.header.tid = 9, 2**63
            fast: list = []
            n = Framer(feats, True, crc_data, 4, -1).frame(m, fast)
            h = m.header
            hdr = _cwire.pack_header(9, 2**63, h.type, h.priority, h.version, len(m.front), 5, 77, 0, 4, -1,
                                     h.compat_version, h.reserved)
            ftr = _cwire.pack_footer(crc32c(0, m.front), crc32c(0, m.middle), crc32c(0, m.data) if crc_data else 0,
                                     0, 1 if crc_data else 3, feats & MSG_AUTH == MSG_AUTH)
            assert b"".join(bytes(x) for x in fast) == b"\x07" + hdr + m.front + m.middle + m.data + ftr
            assert n == len(b"".join(bytes(x) for x in fast))


def test_unframeable_message_stays_queued_without_a_seq_gap():
    net, a, b, p, s = _pair()
    p.send_message(make_msg(1), 0)
    bad = make_msg(2)
    bad.header.tid = 1 << 64       # does not fit the header's u64
    p.send_message(bad, 0)
    p.send_message(make_msg(3), 0)
    seq0 = p.out_seq
    with pytest.raises(OverflowError):
        p.take_output()
    assert p.out_seq == seq0 + 1 and len(p._outq) == 2 and bad.header.seq == 0
    assert [msg_id(m) for m in p._outq.queued()] == [2, 3]


# --- throttle fast path -------------------------------------------------------------------------------------------
def test_throttle_try_get_put_counts_and_refusals():
    t = Throttle("t", 10)
    assert t.try_get(8) and not t.try_get(3) and t.waits == 1 and t.current == 8
    t.put(8)
    assert t.try_get(50) and t.current == 50      # one request above max passes when nothing is held
    assert not t.try_get(1)
    t.put(100)                                    # over-release clamps at 0
    assert t.current == 0
    u = Throttle("unlimited")
    assert all(u.try_get(1 << 40) for _ in range(3)) and u.current == 3 << 40


def test_throttle_put_wakes_a_blocked_get_and_timeouts_leave_no_sleeper():
    import threading
    t = Throttle("t", 4)
    assert t.try_get(4)
    assert not t.get(1, timeout=0.01) and t._sleepers == 0
    got = []
    th = threading.Thread(target=lambda: got.append(t.get(2, timeout=10)))
    th.start()
    while not t._sleepers:
        threading.Event().wait(0.001)
    t.put(3)                                      # a sleeper: put must notify it
    th.join(5)
    assert got == [True] and t.current == 3 and t._sleepers == 0
    th = threading.Thread(target=lambda: got.append(t.get(4, timeout=10)))
    th.start()
    while not t._sleepers:
        threading.Event().wait(0.001)
    t.reset_max(8)                                # raising max wakes it too
    th.join(5)
    assert got == [True, True] and t.current == 7


# --- receive buffer sizing and large segments (protocol_v1: RBUF_*, DIRECT_*) -----------------------------------------
def _stream(s, wire, n, now):
    """Feed ``wire`` as a socket would: recv_into get_buffer() ``n`` bytes at most per read."""
    acts, off = [], 0
    while off < len(wire):
        buf = s.get_buffer()
        k = min(len(buf), n, len(wire) - off)
        buf[:k] = wire[off:off + k]
        off += k
        acts += s.buffer_updated(k, now)
    return delivered(acts)


def test_receive_buffer_small_while_idle_large_while_streaming():
    from msgr.protocol.protocol_v1 import RBUF_QUIET_US, RBUF_SIZE
    host, s = _open_server()
    assert len(s._rbuf) == RBUF_IDLE and len(s.get_buffer()) <= RBUF_IDLE
    frames = [_msg_frame(i, bytes([i & 0xFF]) * 900) for i in range(1, 201)]
    # a read that fills the offered room means the socket has more: the buffer grows, bytes kept
    got = _stream(s, b"".join(frames[:100]), 1 << 20, now=1000)
    assert len(s._rbuf) == RBUF_SIZE and [m.header.seq for m in got] == list(range(1, 101))
    assert all(m.front == bytes([m.header.seq & 0xFF]) * 900 for m in got)
    # still streaming (a full read recently): stays large even when a read leaves it empty
    got = _stream(s, frames[100], 1 << 20, now=1000 + RBUF_QUIET_US // 2)
    assert len(s._rbuf) == RBUF_SIZE and got[0].header.seq == 101
    # a read after a quiet period that leaves it empty: back to the idle size
    got = _stream(s, frames[101], 1 << 20, now=1000 + RBUF_QUIET_US)
    assert len(s._rbuf) == RBUF_IDLE and got[0].header.seq == 102
    # a partial frame left over is never dropped by a resize
    wire = b"".join(frames[102:])
    got = _stream(s, wire[:RBUF_IDLE], 1 << 20, now=10**9)      # fills: grows with a partial frame kept
    got += _stream(s, wire[RBUF_IDLE:], 777, now=10**9)
    assert [m.header.seq for m in got] == list(range(103, 201)) and s.stats["faults"] == 0


def test_trim_idle_and_a_new_socket_give_the_streaming_buffer_back():
    from msgr.protocol.protocol_v1 import RBUF_QUIET_US, RBUF_SIZE
    host, s = _open_server()
    wire = b"".join(_msg_frame(i, b"y" * 3000) for i in range(1, 11))
    _stream(s, wire[:-5], 1 << 20, now=0)
    assert len(s._rbuf) == RBUF_SIZE
    assert not s.trim_idle(RBUF_QUIET_US * 10)        # 5 unread bytes: kept as they are
    _stream(s, wire[-5:], 1 << 20, now=1)
    assert not s.trim_idle(2) and len(s._rbuf) == RBUF_SIZE     # not quiet long enough
    assert s.trim_idle(RBUF_QUIET_US) and len(s._rbuf) == RBUF_IDLE
    _stream(s, wire, 1 << 20, now=RBUF_QUIET_US)
    assert len(s._rbuf) == RBUF_SIZE
    s.on_socket_error("reset", RBUF_QUIET_US)
    assert len(s._rbuf) == RBUF_IDLE


def test_small_frame_larger_than_the_idle_buffer_in_one_short_read_each():
    host, s = _open_server()
    wire = _msg_frame(1, b"f" * 8000, b"", b"d" * 100)           # a batch-sized frame > RBUF_IDLE
    got = _stream(s, wire, 1000, now=0)                         # reads never fill the offered room
    assert [(m.header.seq, m.front, m.data) for m in got] == [(1, b"f" * 8000, b"d" * 100)]


@pytest.mark.parametrize("crc", [True, False])
def test_segment_above_the_prealloc_cap_grows_as_it_arrives_and_arrives_intact(crc):
    import random

    from msgr.protocol.protocol_v1 import DIRECT_CHUNK, DIRECT_PREALLOC_MAX
    cfg = Config(ms_crc_data=crc, ms_crc_header=crc)
    host, s = _open_server(config=cfg)
    rng = random.Random(5)
    data = rng.randbytes(DIRECT_PREALLOC_MAX * 2 + 12345)   # not periodic: chunk order matters
    front = rng.randbytes(DIRECT_PREALLOC_MAX + 7)
    wire = _msg_frame(1, front, b"mid", data) + _msg_frame(2, b"after")
    # first read: the header and a little data; only a first chunk may be allocated
    got = _stream(s, wire[:1 + 53 + 100], 1 << 20, now=0)
    assert s.state is State.OPEN_MESSAGE_READ_FRONT and len(s._direct_buf) == DIRECT_CHUNK
    off, sizes = 1 + 53 + 100, [1, 4096, 65536, 1 << 20, 3 << 20]
    while off < len(wire):
        n = rng.choice(sizes)
        got += _stream(s, wire[off:off + n], n, now=0)
        if s._direct_buf is not None:
            assert len(s._direct_buf) <= max(DIRECT_CHUNK, s._direct_got)   # geometric, never the claim
        off += n
    assert [m.header.seq for m in got] == [1, 2] and s.stats["faults"] == 0
    assert got[0].front == front and got[0].middle == b"mid" and got[0].data == data
    assert isinstance(got[0].data, bytearray) and got[1].front == b"after"


def test_segment_up_to_the_prealloc_cap_is_one_buffer_delivered_without_a_copy():
    from msgr.protocol.protocol_v1 import DIRECT_PREALLOC_MAX
    host, s = _open_server()
    data = bytes(range(251)) * (DIRECT_PREALLOC_MAX // 251) + b"x" * (DIRECT_PREALLOC_MAX % 251)
    wire = _msg_frame(1, b"f", b"", data)
    _stream(s, wire[:1000], 1 << 20, now=0)
    target = s._direct_buf
    assert s._direct_chunks is None and len(target) == DIRECT_PREALLOC_MAX
    got = _stream(s, wire[1000:], 1 << 20, now=0)
    assert got[0].data is target and got[0].data == data


# --- send path: the C framer (msgr_frame_msg) against the pure one -------------------------------------------------
@pytest.mark.parametrize("feats", [CEPH_FEATURES_ALL_PACIFIC, CEPH_FEATURES_ALL_PACIFIC & ~MSG_AUTH])
@pytest.mark.parametrize("crc_header,crc_data", [(True, True), (True, False), (False, True), (False, False)])
def test_c_framer_gives_the_pure_framers_bytes(feats, crc_header, crc_data):
    from msgr.protocol import outq
    if outq._c_frame is None:
        pytest.fail("the C fast path is not built here (make deps)")
    segs = [b"", b"f" * 5, bytearray(b"m" * 9), memoryview(bytes(range(200)))[3:150], memoryview(bytes(70))[::2]]
    c = Framer(feats, crc_header, crc_data, 4, -1)
    py = Framer(feats, crc_header, crc_data, 4, -1)
    py._cflags = None                          # the pure path, as without msgr._fastpath
    assert c._cflags is not None
    c.reserve(3)                               # fewer than framed: frame() makes room itself
    wire_c, wire_py, k = [], [], 0
    for front in segs:
        for middle in segs[:3]:
            for data in segs:
                k += 1
                m = make_msg(k)
                m.front, m.middle, m.data = front, middle, data
                m.header.seq, m.header.tid, m.header.priority = k, 2**64 - k, 196
                m.header.data_off, m.header.reserved = k & 0xFFFF, 7
                out_c, out_py = [], []
                n_c, n_py = c.frame(m, out_c), py.frame(m, out_py)
                m._encoded_features = None
                wire_c.append(b"".join(bytes(x) for x in out_c))
                wire_py.append(b"".join(bytes(x) for x in out_py))
                assert n_c == n_py == len(wire_c[-1])
                assert type(out_c[0]) is memoryview and out_c[1:-1] == out_py[1:-1]   # segments as-is
    c.release()
    assert wire_c == wire_py
    # the receiver's checks accept them (crc on) and they parse back to the same header
    hdr = _cwire.parse_header(wire_c[-1], 1, crc_header)
    assert hdr[0] == k and hdr[1] == 2**64 - k and hdr[10] == -1


def test_c_framer_refuses_out_of_range_fields_like_the_pure_one():
    from msgr.protocol import outq
    for cflags in ("c", None):
        f = Framer(CEPH_FEATURES_ALL_PACIFIC, True, True, 4, 1)
        if cflags is None:
            f._cflags = None
        for field, value in (("tid", 1 << 64), ("priority", 1 << 16), ("seq", -1)):
            m = make_msg(1)
            setattr(m.header, field, value)
            with pytest.raises(OverflowError):
                f.frame(m, [])
    assert outq._c_frame is not None


def test_direct_segment_buffers_are_plain_bytearrays_of_the_announced_length():
    """The direct receive buffers skip the zero fill (protocol_v1._unfilled) but stay bytearrays the
    socket fills whole: the type and length a dispatcher sees are those of bytearray(n)."""
    from msgr.protocol import protocol_v1
    for n in (protocol_v1.DIRECT_MIN + 1, protocol_v1.DIRECT_CHUNK, protocol_v1.DIRECT_PREALLOC_MAX):
        buf = protocol_v1._unfilled(n)
        assert type(buf) is bytearray and len(buf) == n
        buf[-1] = 7
        assert buf[-1] == 7
