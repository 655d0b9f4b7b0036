"""Message codecs against real monitor bytes (tests/data recordings) and round trips.

The pacific-feature fronts come from tests/data/real_mon_session.json. The legacy
(minimal feature set 0x0401020002040000) MON_MAP and the MON_SUBSCRIBE_ACK below were
recorded from a throwaway 16.2.15 mon the same way (a raw v1 client sending the minimal
set): the mon only sends the ack to sessions without MON_STATEFUL_SUB.
"""
from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgr.entity import EntityAddr
from msgr.errors import DecodeError
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MON_REQUIRES_OF_CLIENT
from msgr.message import Message, decode_message
from msgr.messages import (
    MAuth,
    MAuthReply,
    MConfig,
    MMonCommand,
    MMonCommandAck,
    MMonGetVersion,
    MMonGetVersionReply,
    MMonMap,
    MMonSubscribe,
    MMonSubscribeAck,
    MonInfo,
    MonMap,
    MPing,
)
from msgr.messages.auth import AuthNegotiation
from msgr.wire import MsgHeader

DATA = Path(__file__).parent / "data"
SESSION = json.loads((DATA / "real_mon_session.json").read_text())

LEGACY_FSID = uuid.UUID("6c412a28-2ad4-4827-a1a7-7d5da269ca57")
LEGACY_MONMAP_FRONT = bytes.fromhex(
    "bb00000001006c412a282ad44827a1a77d5da269ca570100000001000000010000000000000000000000000000"
    "000000029a517f0000010000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000057ef066bf2"
    "536e2457ef066bf2536e24")
SUBSCRIBE_ACK_FRONT = bytes.fromhex("805101006c412a282ad44827a1a77d5da269ca57")


def _msgs(direction: str, type_: int) -> list[dict]:
    return [e for e in SESSION["events"] if e["kind"] == "msg" and e["dir"] == direction
            and e["type"] == type_]


def _decode(ev: dict) -> Message:
    h = MsgHeader(type=ev["type"], version=ev["version"], compat_version=ev["compat_version"],
                  priority=ev["priority"], src_type=ev["src"][0], src_num=ev["src"][1])
    return decode_message(h, bytes.fromhex(ev["front"]), bytes.fromhex(ev["middle"]),
                          bytes.fromhex(ev["data"]))


def _encode(msg: Message, features: int = CEPH_FEATURES_ALL_PACIFIC) -> Message:
    msg._encode(features)
    return decode_message(msg.header, msg.front, msg.middle, msg.data)


# --- real monitor answers -------------------------------------------------------

def test_auth_reply_from_real_mon() -> None:
    (ev,) = _msgs("rx", 18)
    m = _decode(ev)
    assert isinstance(m, MAuthReply)
    assert (m.protocol, m.result, m.global_id) == (1, 0, SESSION["global_id"])
    assert m.result_bl == b"" and m.result_msg == ""
    assert _encode(MAuthReply(1, 0, m.global_id)).front == bytes.fromhex(ev["front"])


def test_monmap_nautilus_encoding_from_real_mon() -> None:
    evs = _msgs("rx", 4)
    assert len(evs) == 2
    for ev in evs:
        m = _decode(ev)
        assert isinstance(m, MMonMap) and m.monmap is not None
        mm = m.monmap
        assert mm.encoding == "9" and str(mm.fsid) == SESSION["fsid"] and mm.epoch == 1
        assert mm.ranks == ["a"] and list(mm.mons) == ["a"]
        host, port = SESSION["mon_addr"].removeprefix("v1:").split("/")[0].rsplit(":", 1)
        assert mm.mons["a"].addrs == [EntityAddr(EntityAddr.TYPE_LEGACY, 0, host, int(port))]
        assert mm.min_mon_release == 16 and mm.election_strategy == 1
        assert mm.summary()["mons"][0]["name"] == "a"
        # re-encoding for the same features gives the mon's bytes back
        again = MMonMap(mm)
        again.encode_payload(CEPH_FEATURES_ALL_PACIFIC)
        assert again.front == bytes.fromhex(ev["front"])


def test_monmap_legacy_encoding_minimal_features() -> None:
    m = MMonMap()
    m.front = LEGACY_MONMAP_FRONT
    m.decode_payload()
    mm = m.monmap
    assert mm is not None and mm.encoding == "v1"
    assert mm.fsid == LEGACY_FSID and mm.epoch == 1
    (info,) = mm.mons.values()
    assert info.addrs[0].ip == "127.0.0.1" and info.addrs[0].port == 0x9A51
    again = MMonMap(mm)
    again.encode_payload(MON_REQUIRES_OF_CLIENT)
    assert again.front == LEGACY_MONMAP_FRONT


@pytest.mark.parametrize("features", [0, 1 << 59, 1 << 5, (1 << 5) | (1 << 15), CEPH_FEATURES_ALL_PACIFIC])
def test_monmap_all_encodings_round_trip(features: int) -> None:
    a = EntityAddr.parse("v1:10.0.0.1:6789/0")
    b = EntityAddr.parse("v1:10.0.0.2:6789/0")
    mm = MonMap(fsid=uuid.uuid4(), epoch=3, mons={"a": MonInfo("a", [a]), "b": MonInfo("b", [b])},
                ranks=["a", "b"], persistent_features=0xFF)
    got = MonMap.decode(mm.encode(features))
    assert got.fsid == mm.fsid and got.epoch == 3
    assert [got.mons[n].addrs[0] for n in got.rank_names()] == [a, b]


def test_config_and_version_reply_and_command_ack_from_real_mon() -> None:
    (cfg,) = _msgs("rx", 62)
    c = _decode(cfg)
    assert isinstance(c, MConfig) and c.config == {}
    (ver,) = _msgs("rx", 20)
    v = _decode(ver)
    assert isinstance(v, MMonGetVersionReply)
    (req,) = _msgs("tx", 19)
    assert v.handle == _decode(req).handle and v.version >= 1 and v.oldest_version >= 1
    (ack,) = _msgs("rx", 51)
    a = _decode(ack)
    assert isinstance(a, MMonCommandAck) and a.r == 0 and a.rs == ""
    assert json.loads(a.cmd[0])["prefix"] == "mon stat"
    out = json.loads(a.outbl)
    assert out["num_mons"] == 1 and out["leader"] == "a"
    re = _encode(MMonCommandAck(a.cmd, a.r, a.rs, a.outbl, a.version))
    assert re.front == bytes.fromhex(ack["front"]) and re.data == a.data


def test_subscribe_ack_from_real_mon() -> None:
    m = MMonSubscribeAck()
    m.front = SUBSCRIBE_ACK_FRONT
    m.decode_payload()
    assert m.interval == 86400 and m.fsid == LEGACY_FSID
    assert _encode(MMonSubscribeAck(86400, LEGACY_FSID)).front == SUBSCRIBE_ACK_FRONT


# --- what the client sends: byte-exact against the recording --------------------

def test_client_messages_match_recorded_client_bytes() -> None:
    (auth,) = _msgs("tx", 17)
    assert _encode(MAuth.none_request()).front == bytes.fromhex(auth["front"])
    (sub,) = _msgs("tx", 15)
    s = MMonSubscribe(hostname="pymsgr").add("config").add("monmap")
    s._encode(CEPH_FEATURES_ALL_PACIFIC)
    assert s.front == bytes.fromhex(sub["front"])
    assert (s.header.version, s.header.compat_version) == (3, 1)
    (gv,) = _msgs("tx", 19)
    assert _encode(MMonGetVersion("osdmap", 1)).front == bytes.fromhex(gv["front"])
    (cmd,) = _msgs("tx", 50)
    c = _decode(cmd)
    assert isinstance(c, MMonCommand) and str(c.fsid) == SESSION["fsid"]
    assert _encode(MMonCommand(c.cmd, c.fsid)).front == bytes.fromhex(cmd["front"])


def test_mauth_front_is_findings_section_6() -> None:
    # REAL_CEPH.md §6: paxos head, protocol 0, bufferlist(30) {1, {1}, (8,"admin"), 0}, epoch 0
    want = (struct.pack("<QhQ", 0, -1, 0) + struct.pack("<I", 0) + struct.pack("<I", 30)
            + b"\x01" + struct.pack("<II", 1, 1) + struct.pack("<II", 8, 5) + b"admin"
            + bytes(8) + struct.pack("<I", 0))
    m = MAuth.none_request()
    m._encode(CEPH_FEATURES_ALL_PACIFIC)
    assert m.front == want and len(m.front) == 60
    assert (m.header.type, m.header.version, m.header.compat_version) == (17, 1, 1)
    neg = _encode(m).negotiation()
    assert neg == AuthNegotiation([1])
    assert str(neg.name) == "client.admin"


def test_header_versions_as_ceph16_sends_them() -> None:
    assert (MMonGetVersionReply.HEAD_VERSION, MMonGetVersionReply.COMPAT_VERSION) == (2, 2)
    assert (MMonSubscribe.HEAD_VERSION, MMonSubscribe.COMPAT_VERSION) == (3, 1)
    for cls in (MAuth, MAuthReply, MMonGetVersion, MMonMap, MMonCommand, MMonCommandAck, MConfig, MPing):
        assert (cls.HEAD_VERSION, cls.COMPAT_VERSION) == (1, 1), cls


def test_old_subscribe_formats_decode() -> None:
    h = MsgHeader(type=15, version=0, compat_version=0)
    front = struct.pack("<I", 1) + b"\x06\0\0\0osdmap" + struct.pack("<QQB", 0, 9, 1)
    m = decode_message(h, front, b"", b"")
    assert m.what["osdmap"].start == 10 and m.what["osdmap"].flags == 1 and m.hostname == ""


# --- round trips and hostile input ---------------------------------------------------

ALL_TYPES = [MAuth, MAuthReply, MMonGetVersion, MMonGetVersionReply, MMonSubscribe,
             MMonSubscribeAck, MMonMap, MMonCommand, MMonCommandAck, MConfig]
text = st.text(max_size=16)


@settings(max_examples=100)
@given(text, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.lists(text, max_size=4),
       st.integers(-2**31, 2**31 - 1), st.dictionaries(text, text, max_size=4), st.binary(max_size=32))
def test_round_trips(s: str, a: int, b: int, strs: list[str], r: int, d: dict, blob: bytes) -> None:
    gv = _encode(MMonGetVersion(s, a))
    assert (gv.what, gv.handle) == (s, a)
    gr = _encode(MMonGetVersionReply(a, b, a ^ b))
    assert (gr.handle, gr.version, gr.oldest_version) == (a, b, a ^ b)
    sub = MMonSubscribe(hostname=s)
    for i, n in enumerate(strs):
        sub.add(n, a, i & 1)
    sub = _encode(sub)
    assert {k: (v.start, v.flags) for k, v in sub.what.items()} == \
        {n: (a, i & 1) for i, n in enumerate(strs)} and sub.hostname == s
    ack = _encode(MMonCommandAck(strs, r, s, blob, a))
    assert (ack.cmd, ack.r, ack.rs, bytes(ack.data), ack.version) == (strs, r, s, blob, a)
    u = uuid.UUID(int=b % 2**128)
    cmd = _encode(MMonCommand(strs, u))
    assert (cmd.cmd, cmd.fsid) == (strs, u)
    rep = _encode(MAuthReply(2, r, a, blob, s))
    assert (rep.protocol, rep.result, rep.global_id, rep.result_bl, rep.result_msg) == (2, r, a, blob, s)
    assert _encode(MConfig(d)).config == d
    auth = _encode(MAuth(2, blob, b & 0xFFFFFFFF))
    assert (auth.protocol, auth.auth_payload, auth.monmap_epoch) == (2, blob, b & 0xFFFFFFFF)


def _real_fronts() -> list[tuple[int, int, bytes]]:
    out = [(e["type"], e["version"], bytes.fromhex(e["front"])) for e in SESSION["events"]
           if e["kind"] == "msg" and e["front"]]
    return out + [(4, 1, LEGACY_MONMAP_FRONT), (16, 1, SUBSCRIBE_ACK_FRONT)]


@pytest.mark.parametrize("type_,version,front", _real_fronts())
def test_every_truncation_raises_decode_error(type_: int, version: int, front: bytes) -> None:
    h = MsgHeader(type=type_, version=version, compat_version=1)
    decode_message(h, front, b"", b"")
    for n in range(len(front)):
        try:
            decode_message(h, front[:n], b"", b"")
        except DecodeError:
            continue
        # a shorter front may still parse when only optional trailing fields are cut
        assert type_ in (17,) or n >= len(front) - 4, (type_, n)


@settings(max_examples=300)
@given(st.sampled_from(_real_fronts()), st.integers(0, 10**6), st.binary(min_size=1, max_size=8))
def test_mutated_real_fronts_raise_only_decode_error(sample: tuple, pos: int, junk: bytes) -> None:
    type_, version, front = sample
    i = pos % len(front)
    bad = front[:i] + junk + front[i + len(junk):]
    try:
        decode_message(MsgHeader(type=type_, version=version, compat_version=1), bad, b"", b"")
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.sampled_from(ALL_TYPES), st.binary(max_size=200), st.integers(0, 3))
def test_random_fronts_raise_only_decode_error(cls: type, front: bytes, version: int) -> None:
    try:
        decode_message(MsgHeader(type=cls.TYPE, version=version, compat_version=1), front, b"", b"")
    except DecodeError:
        pass


def test_minimal_feature_recording_legacy_monmap_and_subscribe_ack() -> None:
    rec = json.loads((DATA / "real_mon_session_minimal.json").read_text())
    feats = int(rec["features"], 16)
    msgs = [e for e in rec["events"] if e["kind"] == "msg" and e["dir"] == "rx"]
    maps = [_decode(e) for e in msgs if e["type"] == 4]
    (ack,) = [_decode(e) for e in msgs if e["type"] == 16]
    assert maps and isinstance(ack, MMonSubscribeAck) and ack.interval > 0
    for m, ev in zip(maps, [e for e in msgs if e["type"] == 4], strict=False):
        assert m.monmap.encoding == "v1" and m.monmap.fsid == ack.fsid and m.monmap.epoch == 1
        (info,) = m.monmap.mons.values()
        assert str(info.addrs[0]) == rec["mon_addr"]
        again = MMonMap(m.monmap)
        again.encode_payload(feats)
        assert again.front == bytes.fromhex(ev["front"])
