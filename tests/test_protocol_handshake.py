"""Both handshake roles: byte-exact against real Ceph, every reply tag on the client, readers, garbage."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_support import CLIENT, MON, MON_ADDR, SOCK_PEER, RawPeer, make_msg, mon_host

from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, RECONNECT_SEQ
from msgr.policy import Policy
from msgr.protocol.actions import ArmTimer, ConnEvent, Discarded, Fault, Notify, OpenSocket, SessionClosed, TimerKind
from msgr.protocol.protocol_v1 import TRANSITIONS, ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.wire import BANNER, ConnectMsg, ConnectReply, Tag, pack_server_identify, pack_u64, unpack_u64

REAL_CLIENT_CONNECT = bytes.fromhex("fffffdffbdcf013f 08000000 01000000 00000000 0f000000 00000000 00000000 00"
                                    .replace(" ", ""))
REAL_MON_REPLY = bytes.fromhex("0d fffffdffbdcf013f 43000000 01000000 0f000000 00000000 01".replace(" ", ""))
CLIENT_ADDR = EntityAddr.parse("v1:0.0.0.0:0/4242")


def _client(policy: Policy | None = None, peer_type: int = MON) -> tuple[ProtocolV1, FakeHost]:
    host = FakeHost(EntityName.client(), CLIENT_ADDR, default_policy=policy or Policy.lossy_client())
    p = ProtocolV1(host)
    p.start_connect(MON_ADDR, peer_type, 0)
    p.on_connected(EntityAddr.parse("v1:127.0.0.1:45000/0"), 0)
    return p, host


def _out(p: ProtocolV1) -> bytes:
    return b"".join(bytes(b) for b in p.take_output())


def _to_reply_wait(policy=None, peer_type=MON):
    p, host = _client(policy, peer_type)
    assert _out(p) == BANNER
    p.receive_data(pack_server_identify(MON_ADDR, SOCK_PEER), 0)
    return p, host, _out(p)


# --- byte-exact against the real pacific client and monitor (REAL_CEPH.md §2, §4) ---------------------------------
def test_client_connect_bytes_equal_the_real_client():
    p, host, out = _to_reply_wait()
    assert out[:136] == CLIENT_ADDR.with_ip("127.0.0.1").encode_legacy()   # learned our IP from the server
    assert out[136:] == REAL_CLIENT_CONNECT
    assert p.state is State.CONNECTING_WAIT_CONNECT_REPLY


def test_server_reply_bytes_equal_the_real_monitor():
    peer = RawPeer(mon_host(global_seq=66))
    assert peer.identify == pack_server_identify(MON_ADDR, SOCK_PEER)
    acts = peer.proto.receive_data(REAL_CLIENT_CONNECT, 0)
    assert _out(peer.proto) == REAL_MON_REPLY + bytes(8)
    assert Notify(ConnEvent.ACCEPT) in acts and peer.proto.state is State.ACCEPTING_WAIT_SEQ
    peer.send_seq(0)
    assert peer.proto.state is State.OPEN and peer.proto.policy.lossy


def test_client_completes_against_real_monitor_reply_with_seq():
    p, host, _ = _to_reply_wait()
    acts = p.receive_data(REAL_MON_REPLY + bytes(8), 0)
    assert _out(p) == bytes(8) and p.state is State.OPEN
    assert Notify(ConnEvent.CONNECT) in acts
    assert (p.connect_seq, p.peer_global_seq, p.features, p.policy.lossy) == (1, 0x43, CEPH_FEATURES_ALL_PACIFIC, True)


def test_ready_without_reconnect_seq_has_no_u64():
    peer = RawPeer(mon_host())
    r, tail = peer.connect(host_type=CLIENT, proto=15, features=CEPH_FEATURES_ALL_PACIFIC & ~RECONNECT_SEQ)
    assert Tag(r.tag) is Tag.READY and tail == b"" and peer.proto.state is State.OPEN


# --- every reply tag on the client (PROTOCOL.md §8) --------------------------------------------------------------
def _reply(tag, gseq=0, cseq=0, features=CEPH_FEATURES_ALL_PACIFIC, flags=0) -> bytes:
    return ConnectReply(tag, features, gseq, cseq, 13, 0, flags).pack()


@pytest.mark.parametrize("tag", [Tag.FEATURES, Tag.BADPROTOVER, Tag.BADAUTHORIZER, Tag.CHALLENGE_AUTHORIZER])
def test_refusals_fault_and_back_off(tag):
    p, host, _ = _to_reply_wait(Policy.lossless_peer())
    p.send_message(make_msg(1), 0)   # something queued: no standby
    acts = p.receive_data(_reply(tag), 0)
    assert any(isinstance(a, Fault) for a in acts)
    assert ArmTimer(TimerKind.RECONNECT, 200_000) in acts and p.state is State.CONNECTING
    acts = p.on_timer(TimerKind.RECONNECT, 200_000)
    assert acts == [ArmTimer(TimerKind.CONNECTION_READY, 10_000_000), OpenSocket(p.peer_addr)] and p.global_seq == 2


def test_refusal_on_lossy_client_closes_with_reset():
    p, host, _ = _to_reply_wait()
    acts = p.receive_data(_reply(Tag.BADPROTOVER), 0)
    assert Notify(ConnEvent.BAD_RESET) in acts and any(isinstance(a, SessionClosed) for a in acts)
    assert p.state is State.CLOSED and not host.conns


def test_retry_global_session_and_resetsession_resend_connect_on_the_same_socket():
    p, host, _ = _to_reply_wait(Policy.lossless_peer_reuse(), peer_type=MON)
    p.receive_data(_reply(Tag.RETRY_GLOBAL, gseq=5000), 0)
    c = ConnectMsg.unpack(_out(p))
    assert (c.global_seq, c.connect_seq) == (5001, 0)
    p.receive_data(_reply(Tag.RETRY_SESSION, cseq=10), 0)
    c = ConnectMsg.unpack(_out(p))
    assert (c.global_seq, c.connect_seq) == (5001, 10)
    p.send_message(make_msg(9), 0)
    acts = p.receive_data(_reply(Tag.RESETSESSION), 0)
    c = ConnectMsg.unpack(_out(p))
    assert (c.global_seq, c.connect_seq) == (5001, 0)
    # never OPEN: none of its messages was written, so the peer holds none; it starts over and keeps its
    # queue, with no callback (Ceph resets and discards it; PROTOCOL.md §8)
    assert Notify(ConnEvent.BAD_REMOTE_RESET) not in acts and not any(isinstance(a, Discarded) for a in acts)
    acts = p.receive_data(_reply(Tag.SEQ, gseq=7, cseq=1) + pack_u64(0), 0)
    assert p.state is State.OPEN and len(p.outq) == 1
    out = _out(p)
    assert unpack_u64(out) == 0 and len(out) > 8   # our in_seq, then the kept message


def test_resetsession_to_a_session_that_was_open_discards_its_queue():
    p, host, _ = _to_reply_wait(Policy.lossless_peer_reuse(), peer_type=MON)
    p.receive_data(_reply(Tag.READY, gseq=7, cseq=1), 0)
    p.send_message(make_msg(1), 0)
    assert p.state is State.OPEN and len(_out(p)) > 0   # written: the peer may hold it
    p.on_socket_error("reset", 0)                         # reconnects at once with connect_seq 2
    p.on_connected(EntityAddr.parse("v1:127.0.0.1:45001/0"), 0)
    assert _out(p) == BANNER
    p.receive_data(pack_server_identify(MON_ADDR, SOCK_PEER), 0)
    assert ConnectMsg.unpack(_out(p)[136:]).connect_seq == 2
    p.send_message(make_msg(2), 0)
    acts = p.receive_data(_reply(Tag.RESETSESSION), 0)
    assert Notify(ConnEvent.BAD_REMOTE_RESET) in acts
    assert [len(a.messages) for a in acts if isinstance(a, Discarded)] == [2]
    assert ConnectMsg.unpack(_out(p)).connect_seq == 0


def test_retry_session_that_does_not_raise_connect_seq_faults():
    p, host, _ = _to_reply_wait(Policy.lossless_peer())
    acts = p.receive_data(_reply(Tag.RETRY_SESSION, cseq=0), 0)
    assert any(isinstance(a, Fault) for a in acts)


def test_wait_reconnects_after_max_backoff():
    p, host, _ = _to_reply_wait(Policy.lossless_peer())
    acts = p.receive_data(_reply(Tag.WAIT), 0)
    assert ArmTimer(TimerKind.RECONNECT, 15_000_000) in acts and p.state is State.CONNECTING


def test_missing_required_features_in_ready_faults():
    p, host, _ = _to_reply_wait(Policy.lossless_peer(req=RECONNECT_SEQ))
    acts = p.receive_data(_reply(Tag.READY, features=1), 0)
    assert any(isinstance(a, Fault) for a in acts) and p.state is not State.OPEN


def test_server_lossy_flag_wins_and_connect_seq_is_adopted():
    p, host, _ = _to_reply_wait(Policy.lossless_peer())
    p.receive_data(_reply(Tag.READY, gseq=9, cseq=4, flags=1), 0)
    assert p.state is State.OPEN and p.policy.lossy and p.connect_seq == 4 and p.peer_global_seq == 9


def test_unknown_reply_tag_faults():
    p, host, _ = _to_reply_wait()
    assert any(isinstance(a, Fault) for a in p.receive_data(_reply(99), 0))


# --- readers: whole / byte by byte / with trailing bytes ------------------------------------------------------------
def _feed(p: ProtocolV1, data: bytes, mode: str) -> list:
    if mode == "whole":
        return p.receive_data(data, 0)
    acts = []
    for i in range(len(data)):
        acts += p.receive_data(data[i:i + 1], 0)
    return acts


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_client_readers_whole_bytewise_and_with_trailing(mode):
    p, host = _client()
    _out(p)
    _feed(p, pack_server_identify(MON_ADDR, SOCK_PEER), mode)
    assert p.state is State.CONNECTING_WAIT_CONNECT_REPLY and len(_out(p)) == 136 + 33
    # reply + u64 + a KEEPALIVE2_ACK frame trailing in the same read
    _feed(p, REAL_MON_REPLY + pack_u64(0) + b"\x0f" + bytes(range(8)), mode)
    assert p.state is State.OPEN and p.last_keepalive_ack_stamp == (0x03020100, 0x07060504)


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_server_readers_whole_bytewise_and_with_trailing(mode):
    s = ProtocolV1(mon_host())
    s.start_accept(SOCK_PEER, MON_ADDR, 0)
    _out(s)
    _feed(s, BANNER + CLIENT_ADDR.encode_legacy() + REAL_CLIENT_CONNECT, mode)
    assert s.state is State.ACCEPTING_WAIT_SEQ and s.peer_addr == CLIENT_ADDR.with_ip("127.0.0.1")
    _feed(s, pack_u64(0) + b"\x09", mode)    # u64 + a trailing KEEPALIVE
    assert s.state is State.OPEN and s.last_keepalive_us == 0 and s.stats["faults"] == 0


# --- garbage at every handshake state -> Fault, never another exception ---------------------------------------------
def _client_at(state: State) -> ProtocolV1:
    p, host, _ = _to_reply_wait(Policy.lossless_peer())
    if state is State.CONNECTING_WAIT_BANNER_AND_IDENTIFY:
        p, host = _client(Policy.lossless_peer())
    elif state is State.CONNECTING_WAIT_ACK_SEQ:
        p.receive_data(_reply(Tag.SEQ, cseq=1), 0)
    assert p.state is state
    return p


def _server_at(state: State) -> ProtocolV1:
    s = ProtocolV1(mon_host())
    s.start_accept(SOCK_PEER, MON_ADDR, 0)
    if state is not State.ACCEPTING_WAIT_BANNER_ADDR:
        s.receive_data(BANNER + CLIENT_ADDR.encode_legacy(), 0)
    if state is State.ACCEPTING_WAIT_SEQ:
        s.receive_data(REAL_CLIENT_CONNECT, 0)
    assert s.state is state
    return s


BAD = {
    State.CONNECTING_WAIT_BANNER_AND_IDENTIFY: b"ceph v2\n" + bytes(300),
    State.CONNECTING_WAIT_CONNECT_REPLY: ConnectReply(Tag.READY, 0, 0, 0, 0, 5000, 0).pack(),
    State.ACCEPTING_WAIT_BANNER_ADDR: b"ceph v027" + b"\x00\x00\x00\x00\x01\x00\x00\x00\x00\x07" + bytes(200),
    State.ACCEPTING_WAIT_CONNECT_MSG: ConnectMsg(0, 8, 1, 0, 15, 0, 100000, 0).pack(),
}


@pytest.mark.parametrize("state", list(BAD))
def test_bad_bytes_in_handshake_fault(state):
    p = _client_at(state) if state.name.startswith("CONNECTING") else _server_at(state)
    acts = p.receive_data(BAD[state], 0)
    assert [a for a in acts if isinstance(a, Fault)], acts


HANDSHAKE_STATES = [State.CONNECTING_WAIT_BANNER_AND_IDENTIFY, State.CONNECTING_WAIT_CONNECT_REPLY,
                    State.CONNECTING_WAIT_ACK_SEQ, State.ACCEPTING_WAIT_BANNER_ADDR,
                    State.ACCEPTING_WAIT_CONNECT_MSG, State.ACCEPTING_WAIT_SEQ]


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from(HANDSHAKE_STATES), junk=st.binary(min_size=1, max_size=600), eof=st.booleans())
def test_random_garbage_in_handshake_never_raises(state, junk, eof):
    p = _client_at(state) if state.name.startswith("CONNECTING") else _server_at(state)
    acts = p.receive_data(junk, 0)
    if eof:
        acts += p.receive_data(b"", 0)
        assert p.state in (State.CLOSED, State.CONNECTING, State.STANDBY) or p.state in TRANSITIONS
    p.take_output()
    for a in acts:
        assert type(a).__module__ == "msgr.protocol.actions"


def test_half_accepted_connection_with_nothing_to_send_just_closes():
    s = _server_at(State.ACCEPTING_WAIT_CONNECT_MSG)
    acts = s.receive_data(b"", 0)
    assert s.state is State.CLOSED and Notify(ConnEvent.BAD_RESET) not in acts
