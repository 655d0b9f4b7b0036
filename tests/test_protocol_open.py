"""OPEN state: framing bytes (§5.6), bulk traffic with random chunking, CRC modes, old header/footer,
throttles, keepalives, acks, direct reads, and garbage -> Fault."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from msgr import _cwire
from msgr.config import Config
from msgr.crc import crc32c
from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MSG_AUTH, MSGR_KEEPALIVE2, NOSRCADDR, RECONNECT_SEQ
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.actions import Deliver, Fault, SessionClosed
from msgr.protocol.outq import Framer
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet
from msgr.throttle import Throttle
from msgr.wire import ConnectReply, Tag, pack_server_identify, pack_u64

from test_protocol_support import TEST_TYPE, make_msg, msg_id

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
    (d,) = [a for a in acts if isinstance(a, Deliver)]
    assert isinstance(d.msg.data, bytearray) and d.msg.data == bytes([7]) * 200_000


def test_one_cumulative_ack_per_receive_batch_and_many_messages_per_take_output():
    net, a, b, p, s = _pair()
    for i in range(5):
        p.send_message(make_msg(i), 0)
    out = p.take_output()
    assert len(out) == 5 * 3   # tag+header, front, footer per message, all in one list
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
    assert len([x for x in s.receive_data(wire, 0) if isinstance(x, Deliver)]) == 1
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
        net.held.pop(0).release_throttles()   # the dispatcher finished one: the next can be read
        net.run(until=lambda: len(net.messages(b)) > before)
    for m in net.held:
        m.release_throttles()
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
