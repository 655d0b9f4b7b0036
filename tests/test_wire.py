"""msgr.wire: every struct round-trips, real Ceph bytes decode, malformed input raises typed errors."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgr import wire
from msgr.entity import EntityAddr
from msgr.errors import BadAddressError, BadBannerError, BadCrcError, BadLengthError, DecodeError, ShortBufferError
from msgr.wire import ConnectMsg, ConnectReply, MsgFooter, MsgFooterOld, MsgHeader, MsgHeaderOld, Tag

# REAL_CEPH.md §2: the connect a real pacific `ceph` client sent
REAL_CLIENT_CONNECT = bytes.fromhex("fffffdffbdcf013f" "08000000" "01000000" "00000000" "0f000000"
                                    "00000000" "00000000" "00")
# REAL_CEPH.md §4: the SEQ reply a real monitor sent
REAL_MON_REPLY = bytes.fromhex("0d" "fffffdffbdcf013f" "43000000" "01000000" "0f000000" "00000000" "01")
# REAL_CEPH.md §5: the real client's MAuth header (49 bytes + crc on the wire)
REAL_MAUTH_HEADER49 = bytes.fromhex("0100000000000000" "0000000000000000" "1100" "7f00" "0100" "3c000000"
                                    "00000000" "00000000" "0000" "08" "ffffffffffffffff" "0100" "0000")
REAL_AUTH_REPLY_HEADER49 = bytes.fromhex(
    "010000000000000000000000000000001200c4000100180000000000000000000000000001000000000000000001000000")


def test_real_client_connect_decodes():
    c = ConnectMsg.unpack(REAL_CLIENT_CONNECT)
    assert c == ConnectMsg(features=0x3F01CFBDFFFDFFFF, host_type=8, global_seq=1, connect_seq=0,
                           protocol_version=15, authorizer_protocol=0, authorizer_len=0, flags=0)
    assert c.pack() == REAL_CLIENT_CONNECT
    assert ConnectMsg.SIZE == 33


def test_real_mon_reply_decodes():
    r = ConnectReply.unpack(REAL_MON_REPLY)
    assert (r.tag, r.features, r.global_seq, r.connect_seq, r.protocol_version, r.authorizer_len, r.flags) == (
        Tag.SEQ, 0x3F01CFBDFFFDFFFF, 0x43, 1, 15, 0, wire.CONNECT_LOSSY)
    assert r.pack() == REAL_MON_REPLY
    assert ConnectReply.SIZE == 26


@pytest.mark.parametrize("raw,crc", [(REAL_MAUTH_HEADER49, 0xE2AB4B69), (REAL_AUTH_REPLY_HEADER49, 0xF8A0F371)])
def test_real_headers_crc_and_round_trip(raw, crc):
    full = raw + struct.pack("<I", crc)
    h = MsgHeader.unpack(full)
    assert h.crc == crc
    assert h.pack() == full
    with pytest.raises(BadCrcError):
        MsgHeader.unpack(raw + struct.pack("<I", crc ^ 1))
    assert MsgHeader.unpack(raw + struct.pack("<I", crc ^ 1), check_crc=False).crc == crc ^ 1


def test_mauth_header_fields():
    h = MsgHeader.unpack(REAL_MAUTH_HEADER49 + struct.pack("<I", 0xE2AB4B69))
    assert (h.seq, h.type, h.priority, h.version, h.front_len, h.src_type, h.src_num, h.compat_version) == (
        1, 17, 127, 1, 60, 8, -1, 1)


def _headers():
    u = st.integers
    return st.builds(MsgHeader, seq=u(0, 2**64 - 1), tid=u(0, 2**64 - 1), type=u(0, 0xFFFF),
                     priority=u(0, 0xFFFF), version=u(0, 0xFFFF), front_len=u(0, 2**32 - 1),
                     middle_len=u(0, 2**32 - 1), data_len=u(0, 2**32 - 1), data_off=u(0, 0xFFFF),
                     src_type=u(0, 255), src_num=u(-2**63, 2**63 - 1), compat_version=u(0, 0xFFFF),
                     reserved=u(0, 0xFFFF))


@given(_headers())
def test_header_round_trip(h):
    raw = h.pack()
    assert len(raw) == wire.HEADER_SIZE
    back = MsgHeader.unpack(raw)
    h.crc = back.crc
    assert back == h
    # trailing bytes are ignored, an offset is honoured
    assert MsgHeader.unpack(b"xx" + raw + b"trailing", 2) == back


@given(_headers(), st.integers(0, 52))
def test_header_short_buffer(h, cut):
    with pytest.raises(ShortBufferError):
        MsgHeader.unpack(h.pack()[:cut])


def test_header_old_round_trip():
    src = EntityAddr.parse("v1:10.0.0.1:6800/77")
    h = MsgHeaderOld(seq=5, tid=9, type=2, priority=127, version=1, front_len=3, src_type=4, src_num=1,
                     src_addr=src, orig_src_type=4, orig_src_num=1, orig_src_addr=src)
    raw = h.pack()
    assert len(raw) == wire.HEADER_OLD_SIZE == 334
    back = MsgHeaderOld.unpack(raw)
    assert (back.seq, back.tid, back.type, back.front_len, back.src_addr, back.orig_src_num) == (5, 9, 2, 3, src, 1)
    bad = bytearray(raw)
    bad[0] ^= 0xFF
    with pytest.raises(BadCrcError):
        MsgHeaderOld.unpack(bytes(bad))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**64 - 1), st.integers(0, 255))
def test_footers_round_trip(fc, mc, dc, sig, flags):
    f = MsgFooter(fc, mc, dc, sig, flags)
    assert len(f.pack()) == 21 and MsgFooter.unpack(f.pack()) == f
    o = MsgFooterOld(fc, mc, dc, flags)
    assert len(o.pack()) == 13 and MsgFooterOld.unpack(o.pack()) == o


@pytest.mark.parametrize("cls", [MsgFooter, MsgFooterOld, ConnectMsg, ConnectReply])
def test_short_structs_raise(cls):
    raw = cls().pack()
    for cut in range(len(raw)):
        with pytest.raises(ShortBufferError):
            cls.unpack(raw[:cut])


def test_connect_structs_byte_by_byte_and_trailing():
    c = ConnectMsg(features=1, host_type=4, global_seq=3, connect_seq=2, protocol_version=10,
                   authorizer_protocol=1, authorizer_len=18, flags=1)
    raw = c.pack()
    assert ConnectMsg.unpack(raw + b"\xff" * 5) == c
    assert ConnectMsg.unpack(b"\0" * 3 + raw, 3) == c


def test_impossible_authorizer_lengths():
    with pytest.raises(BadLengthError):
        ConnectMsg.unpack(ConnectMsg(authorizer_len=1 << 31).pack())
    with pytest.raises(BadLengthError):
        ConnectReply.unpack(ConnectReply(authorizer_len=5000).pack())


def test_banner_and_identify():
    wire.check_banner(b"ceph v027")
    with pytest.raises(BadBannerError):
        wire.check_banner(b"ceph v2\n\0")
    with pytest.raises(ShortBufferError):
        wire.check_banner(b"ceph")
    server = EntityAddr.parse("v1:127.0.0.1:6789/0")
    seen = EntityAddr.parse("v1:127.0.0.1:40000/0")
    raw = wire.pack_server_identify(server, seen)
    assert len(raw) == wire.SERVER_IDENTIFY_SIZE == 281
    assert wire.unpack_server_identify(raw) == (server, seen)
    with pytest.raises(BadBannerError):
        wire.unpack_server_identify(b"X" + raw[1:])
    bad_family = bytearray(raw)
    bad_family[9 + 8:9 + 10] = b"\x00\x07"
    with pytest.raises(BadAddressError):
        wire.unpack_server_identify(bytes(bad_family))


def test_small_frames():
    assert wire.pack_ack(5) == b"\x08" + (5).to_bytes(8, "little")
    ka = wire.pack_keepalive2(1700000000, 123)
    assert ka[0] == Tag.KEEPALIVE2 and wire.unpack_timespec(ka, 1) == (1700000000, 123)
    assert wire.pack_keepalive2_ack(ka[1:]) == bytes([Tag.KEEPALIVE2_ACK]) + ka[1:]
    with pytest.raises(ShortBufferError):
        wire.unpack_u64(b"\0" * 7)


def test_proto_versions():
    MON, OSD, MDS, CLIENT, MGR = 1, 4, 2, 8, 16
    assert wire.proto_version(CLIENT, MON, connecting=True) == 15
    assert wire.proto_version(MON, CLIENT, connecting=False) == 15
    assert wire.proto_version(MON, MGR, connecting=False) == 15      # server side uses its own type
    assert wire.proto_version(MON, MON, connecting=True) == 13       # observed on pacific
    assert wire.proto_version(CLIENT, OSD, connecting=True) == 24
    assert wire.proto_version(CLIENT, MDS, connecting=True) == 32
    assert wire.proto_version(CLIENT, MGR, connecting=True) == 0


def test_all_decode_errors_are_decode_errors():
    for exc in (ShortBufferError("x", 1, 0), BadCrcError("x", 1, 2), BadBannerError("x"),
                BadAddressError("x"), BadLengthError("x")):
        assert isinstance(exc, DecodeError)
