"""The server decision table of PROTOCOL.md §7, row by row, reproducing REAL_CEPH.md §11 (E0-E7)."""
from __future__ import annotations

import pytest
from test_protocol_support import CLIENT, MON, OSD, PEER_ADDR, RawPeer, make_msg, mon_host, reply_fields

from msgr.entity import EntityAddr
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MON_REQUIRES_OF_CLIENT, RECONNECT_SEQ
from msgr.policy import Policy
from msgr.protocol.actions import CloseSocket, Deliver, PokeExisting, ReplaceExisting, StopExisting
from msgr.protocol.handshake import SERVER_DECISIONS, ConnectCtx, Do, Existing, decide
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.wire import ConnectMsg, Tag, unpack_u64


# --- E0 / E5: gates in the order protocol -> features -> authorizer -------------------------------------
@pytest.mark.parametrize("host_type, expect", [(CLIENT, 15), (MON, 13), (OSD, 15), (2, 15), (16, 15)])
def test_e0_badprotover_names_our_version(host_type, expect):
    peer = RawPeer(mon_host())
    r, _ = peer.connect(host_type=host_type, proto=0)
    assert (Tag(r.tag), r.protocol_version, r.global_seq, r.connect_seq, r.flags) == (Tag.BADPROTOVER, expect, 0, 0, 0)
    assert peer.proto.state is State.ACCEPTING_WAIT_CONNECT_MSG     # the socket stays open
    r, tail = peer.connect(host_type=host_type, proto=expect)
    assert Tag(r.tag) is Tag.SEQ and tail == bytes(8)


def test_e0_order_protocol_then_features_then_authorizer():
    host = mon_host()
    host.policies[MON] = Policy.lossless_peer_reuse(MON_REQUIRES_OF_CLIENT)
    peer = RawPeer(host)
    r, _ = peer.connect(proto=0, features=0)
    assert Tag(r.tag) is Tag.BADPROTOVER
    r, _ = peer.connect(features=0, auth=b"")
    assert Tag(r.tag) is Tag.FEATURES and r.features == MON_REQUIRES_OF_CLIENT
    r, _ = peer.connect(auth=b"")
    assert Tag(r.tag) is Tag.BADAUTHORIZER                # a MON peer must send AUTH_NONE
    r, _ = peer.connect()
    assert Tag(r.tag) is Tag.SEQ


@pytest.mark.parametrize("offered, expect", [(0, MON_REQUIRES_OF_CLIENT), (0x40, MON_REQUIRES_OF_CLIENT | 0x40)])
def test_features_reply_shows_offered_and_required(offered, expect):
    host = mon_host()
    host.default_policy = Policy.stateless_server(MON_REQUIRES_OF_CLIENT)
    r, _ = RawPeer(host).connect(host_type=CLIENT, proto=15, features=offered)
    assert (Tag(r.tag), r.features, r.global_seq, r.connect_seq, r.flags) == (Tag.FEATURES, expect, 0, 0, 0)


@pytest.mark.parametrize("auth_proto, auth", [(0, b"\x01garbage"), (2, b"\x01"), (1, b"\x07abc"), (1, b"\x01\x01")])
def test_bad_authorizers_are_refused(auth_proto, auth):
    r, _ = RawPeer(mon_host()).connect(host_type=CLIENT, proto=15, auth=auth, auth_proto=auth_proto,
                                       features=CEPH_FEATURES_ALL_PACIFIC)
    assert Tag(r.tag) is Tag.BADAUTHORIZER


def test_cephx_authorizer_requires_cephx_v2_first():
    r, _ = RawPeer(mon_host()).connect(host_type=CLIENT, proto=15, auth=b"\x01", auth_proto=2,
                                       features=CEPH_FEATURES_ALL_PACIFIC & ~(1 << 61))
    assert Tag(r.tag) is Tag.FEATURES


def test_retry_with_empty_authorizer_rechecks_previous_bytes():
    peer = RawPeer(mon_host())
    r, _ = peer.connect(auth=b"\x01junk", auth_proto=1)
    assert Tag(r.tag) is Tag.BADAUTHORIZER
    r, _ = peer.connect(host_type=MON, auth=b"", auth_proto=1)
    assert Tag(r.tag) is Tag.BADAUTHORIZER   # observed: the previous bytes are checked again


# --- E1-E2: one MON identity reconnecting (lossless_peer_reuse) ------------------------------------------
def _open(peer: RawPeer, **kw):
    r, tail = peer.connect(**kw)
    if r.tag == Tag.SEQ:
        assert unpack_u64(tail) == peer.proto.in_seq
        peer.send_seq(0)
    assert peer.proto.state is State.OPEN
    return r


def test_e1_e2_sequence_matches_the_real_monitor():
    host = mon_host(global_seq=68)
    p = RawPeer(host)
    r = _open(p, cseq=0, gseq=101)
    assert reply_fields(r) == ("SEQ", 69, 1) and r.flags == 0 and r.features == CEPH_FEATURES_ALL_PACIFIC
    E = p.proto
    p.close()
    assert E.state is State.STANDBY and host.lookup_conn(PEER_ADDR) is E
    p = RawPeer(host)
    steps = [  # (connect kwargs, expected (tag, g, c)) straight from REAL_CEPH.md §11.3
        (dict(cseq=1, gseq=102), ("RETRY_SESSION", 0, 2)),
        (dict(cseq=2, gseq=103), ("RETRY_GLOBAL", 101, 0)),
        (dict(cseq=2, gseq=104), ("SEQ", None, 3)),
        "reconnect",
        (dict(cseq=0, gseq=105), ("RETRY_GLOBAL", 104, 0)),
        (dict(cseq=0, gseq=106), ("READY", None, 1)),
        "reconnect",
        (dict(cseq=7, gseq=107), ("RETRY_GLOBAL", 106, 0)),
        (dict(cseq=7, gseq=108), ("SEQ", None, 8)),
        "reconnect",
        (dict(cseq=9, gseq=50), ("RETRY_GLOBAL", 108, 0)),
        (dict(cseq=9, gseq=109), ("RETRY_GLOBAL", 108, 0)),
        (dict(cseq=9, gseq=110), ("SEQ", None, 10)),
        "reconnect",
        (dict(cseq=1, gseq=111), ("RETRY_SESSION", 0, 11)),
        (dict(cseq=11, gseq=112), ("RETRY_GLOBAL", 110, 0)),
        (dict(cseq=11, gseq=3), ("SEQ", None, 12)),
        "reconnect",
        (dict(cseq=13, gseq=113, features=CEPH_FEATURES_ALL_PACIFIC & ~RECONNECT_SEQ), ("RETRY_GLOBAL", 3, 0)),
        (dict(cseq=13, gseq=114, features=CEPH_FEATURES_ALL_PACIFIC & ~RECONNECT_SEQ), ("READY", None, 14)),
    ]
    for step in steps:
        if step == "reconnect":
            p.close()
            p = RawPeer(host)
            continue
        kw, (tag, g, c) = step
        r, tail = p.connect(**kw)
        got = reply_fields(r)
        assert got[0] == tag and got[2] == c and (g is None or got[1] == g), (kw, got)
        if tag == "SEQ":
            p.send_seq(0)
        if tag in ("SEQ", "READY"):
            assert p.proto is E and E.state is State.OPEN and E.connect_seq == c
    assert host.lookup_conn(PEER_ADDR) is E and len(host.conns) == 1


def test_e2d_stale_global_seq_does_not_replace():
    host = mon_host()
    p = RawPeer(host)
    _open(p, gseq=108)
    p.close()
    q = RawPeer(host)
    q.connect(cseq=9, gseq=50)
    assert not [a for a in q.acts if isinstance(a, ReplaceExisting)]
    assert q.proto.last_decision.row == 12


# --- E3: a restarted peer (new nonce) resuming a session ----------------------------------------------------
def test_e3_mon_peer_with_unknown_session_gets_resetsession_then_opens():
    peer = RawPeer(mon_host(), claimed=EntityAddr.parse("v1:127.0.0.1:7000/999"))
    r, _ = peer.connect(cseq=5, gseq=500)
    assert reply_fields(r) == ("RESETSESSION", 0, 0) and peer.proto.last_decision.row == 8
    r = _open(peer, cseq=0, gseq=500)
    assert reply_fields(r)[::2] == ("SEQ", 1)


def test_e3_client_on_stateless_server_opens_without_lookup():
    peer = RawPeer(mon_host(), claimed=EntityAddr.parse("v1:127.0.0.1:7000/999"))
    r = _open(peer, host_type=CLIENT, proto=15, cseq=5)
    assert reply_fields(r)[::2] == ("SEQ", 6) and r.flags == 1 and peer.proto.last_decision.row == 6


def test_e4c_two_client_sockets_same_identity_both_open():
    host = mon_host()
    a, b = RawPeer(host), RawPeer(host)
    _open(a, host_type=CLIENT, proto=15)
    _open(b, host_type=CLIENT, proto=15)
    assert a.proto.state is b.proto.state is State.OPEN and not host.conns   # never registered


# --- E4: replacing a session that is still open ----------------------------------------------------------
def test_e4a_peer_reset_replaces_open_session_and_racing_third_gets_retry_global():
    host = mon_host()
    a = RawPeer(host)
    _open(a, gseq=10)
    E = a.proto
    b = RawPeer(host)
    r, _ = b.connect(cseq=0, gseq=11)
    assert reply_fields(r) == ("RETRY_GLOBAL", 10, 0)
    assert any(isinstance(x, CloseSocket) for x in b.acts)       # A's socket is shut at once
    c = RawPeer(host)
    r, _ = c.connect(cseq=0, gseq=12)
    assert reply_fields(r) == ("RETRY_GLOBAL", 10, 0) and c.proto.last_decision.row == 11
    r, _ = b.connect(cseq=0, gseq=13)
    assert reply_fields(r)[::2] == ("READY", 1) and b.proto is E


def test_e4b_replace_keeps_session_and_resends_unacked():
    host = mon_host()
    a = RawPeer(host)
    _open(a, gseq=20)
    E = a.proto
    acts = E.receive_data(b"\x07" + _ping_frame(seq=1), 0)
    assert [type(x) for x in acts] == [Deliver]
    E.send_message(make_msg(77), 0)
    out = b"".join(bytes(x) for x in E.take_output())
    assert out[0] == Tag.MSG and out[-9:] == b"\x08" + (1).to_bytes(8, "little")   # reply + ACK 1
    b = RawPeer(host)
    r, _ = b.connect(cseq=1, gseq=21)
    assert reply_fields(r) == ("RETRY_SESSION", 0, 2) and not any(isinstance(x, CloseSocket) for x in b.acts)
    r, _ = b.connect(cseq=2, gseq=22)
    assert reply_fields(r) == ("RETRY_GLOBAL", 20, 0) and any(isinstance(x, CloseSocket) for x in b.acts)
    r, tail = b.connect(cseq=2, gseq=23)
    assert reply_fields(r)[::2] == ("SEQ", 3) and unpack_u64(tail) == 1
    b.send_seq(0)
    out = b"".join(bytes(x) for x in E.take_output())
    assert out[0] == Tag.MSG and unpack_u64(out, 1) == 1       # re-sent with the same seq


def _ping_frame(seq: int) -> bytes:
    from msgr import _cwire
    hdr = _cwire.pack_header(seq, 0, 2, 127, 1, 0, 0, 0, 0, 1, 0, 1, 0)
    return hdr + _cwire.pack_footer(0, 0, 0, 0, 1, True)


def test_reset_from_peer_ends_with_the_replace_that_set_it():
    """Sim seeds 147/187 (10% resets) and 92/134 (30%): a row-14 replace ("peer reset") was adopted, its
    socket died before the retry connect, and the flag survived the fault. The session reconnected, and a
    later ordinary replace (row 20) was answered READY: in_seq went to 0 and the peer's requeued messages
    were taken again. Ceph's fault() clears is_reset_from_peer; the later open must answer SEQ with in_seq."""
    host = mon_host()
    host.policies[MON] = Policy.lossless_peer()          # no resetcheck: row 14 keeps E's seqs
    a = RawPeer(host)
    _open(a, gseq=10)
    E = a.proto
    assert [type(x) for x in E.receive_data(b"\x07" + _ping_frame(seq=5), 0)] == [Deliver]
    assert E.in_seq == 5 and E.connect_seq == 1
    b = RawPeer(host)
    r, _ = b.connect(cseq=0, gseq=11)                     # connect_seq 0 against E.cseq 1: row 14
    assert reply_fields(r) == ("RETRY_GLOBAL", 10, 0) and b.proto is E and E._reset_from_peer
    b.close()                                             # dies before the retry: E faults (idle: standby)
    assert E.state is State.STANDBY and E.connect_seq == 1 and not E._reset_from_peer
    c = RawPeer(host)
    first = c.proto
    r, _ = c.connect(cseq=2, gseq=12)                     # an ordinary reconnect from the peer: row 20
    assert first.last_decision.row == 20 and reply_fields(r) == ("RETRY_GLOBAL", 10, 0) and c.proto is E
    r, tail = c.connect(cseq=2, gseq=13)
    assert reply_fields(r)[::2] == ("SEQ", 3) and unpack_u64(tail) == 5 and E.in_seq == 5
    c.send_seq(0)
    assert E.state is State.OPEN
    assert E.receive_data(b"\x07" + _ping_frame(seq=5), 0) == []          # a resent duplicate is dropped


# --- E7: races (our own attempt is in flight) ----------------------------------------------------------------
def _connecting_existing(host, peer_addr):
    e = ProtocolV1(host)
    e.start_connect(peer_addr, MON, 0)
    e.on_connected(EntityAddr.parse("v1:127.0.0.1:50000/0"), 0)
    e.take_output()
    return e


@pytest.mark.parametrize("nonce, port, winner", [(5, 7000, "wait"), (0, 6000, "replace")])
def test_e7_race_decided_by_address_order(nonce, port, winner):
    host = mon_host()
    peer_addr = EntityAddr.parse(f"v1:127.0.0.1:{port}/{nonce}")
    e = _connecting_existing(host, peer_addr)
    assert host.lookup_conn(peer_addr) is e
    peer = RawPeer(host, claimed=peer_addr)
    r, _ = peer.connect(cseq=0, gseq=30)
    if winner == "wait":
        assert reply_fields(r) == ("WAIT", 0, 0) and peer.proto.last_decision.row == 18
        assert any(isinstance(x, PokeExisting) and x.existing is e for x in peer.acts)
        assert peer.proto.state is State.ACCEPTING_WAIT_CONNECT_MSG
    else:
        assert Tag(r.tag) is Tag.RETRY_GLOBAL and peer.proto is e and e.state is State.ACCEPTING_WAIT_CONNECT_MSG
        assert any(isinstance(x, CloseSocket) for x in peer.acts)   # our outgoing socket closes at once
        r = _open(peer, cseq=0, gseq=41)
        assert reply_fields(r)[::2] == ("SEQ", 1)


def test_row13_lossy_existing_is_stopped_and_replaced():
    host = mon_host()
    host.policies[MON] = Policy.lossless_peer_reuse()
    peer_addr = EntityAddr.parse("v1:127.0.0.1:7000/5")
    e = _connecting_existing(host, peer_addr)
    e.policy.lossy = True
    peer = RawPeer(host, claimed=peer_addr)
    r = _open(peer, cseq=0, gseq=30)
    assert peer.proto.last_decision.row == 13 and Tag(r.tag) is Tag.SEQ
    assert any(isinstance(x, StopExisting) and x.existing is e for x in peer.acts)
    assert host.lookup_conn(peer_addr) is peer.proto


# --- the pure table ----------------------------------------------------------------------------------------------
def _ctx(c=None, e=None, **kw):
    base = dict(c=c or ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, MON, 10, 0, 13, 1, 18, 0), my_proto=13, required=0,
                auth_ok=True, policy=Policy.lossless_peer_reuse(), e=e, replacing=False, peer_lt_me=False)
    base.update(kw)
    return ConnectCtx(**base)


def _e(**kw):
    base = dict(closed=False, replacing=False, pgs=5, cseq=0, lossy=False, open_or_standby=False, server=False,
                client=False)
    base.update(kw)
    return Existing(**base)


@pytest.mark.parametrize("ctx, row, do", [
    (_ctx(e=_e(closed=True)), 10, Do.OPEN),
    (_ctx(e=_e(cseq=0, open_or_standby=True)), 16, Do.REPLACE),       # resetcheck && E.cseq == 0
    (_ctx(e=_e(cseq=0), peer_lt_me=True), 17, Do.REPLACE),
    (_ctx(e=_e(cseq=0, server=True)), 17, Do.REPLACE),
    (_ctx(e=_e(cseq=0)), 18, Do.WAIT),
    (_ctx(e=_e(cseq=0, client=True), peer_lt_me=True), 18, Do.WAIT),   # a client of a server: its attempt
    (_ctx(c=ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, MON, 10, 3, 13, 1, 18, 0), e=_e(cseq=0)), 19, Do.REPLY),
    (_ctx(c=ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, MON, 10, 3, 13, 1, 18, 0), e=_e(cseq=0),
          policy=Policy.lossless_peer()), 20, Do.REPLACE),
    (_ctx(c=ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, MON, 10, 3, 13, 1, 18, 0), replacing=True), 9, Do.OPEN),
])
def test_rows_not_reachable_on_a_real_mon(ctx, row, do):
    d = decide(ctx)
    assert (d.row, d.do) == (row, do)


def test_table_lists_every_row_once_in_order():
    rows = [r for r, *_ in SERVER_DECISIONS]
    assert rows == sorted(rows) and set(rows) == {1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
