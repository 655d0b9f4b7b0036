"""The first bytes a real Ceph monitor sends, decoded with msgr.wire / msgr.entity."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cephmon import CephMon

from msgr import wire
from msgr.crc import crc32c
from msgr.entity import EntityAddr
from msgr.errors import BadBannerError, BadCrcError

IDENTIFY_SIZE = 9 + 136 + 136


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


@pytest.fixture
def identify(ceph_mon: CephMon):
    """(281 bytes the mon sent before we wrote anything, our socket's (ip, port))."""
    with socket.create_connection((ceph_mon.host, ceph_mon.port), timeout=10) as s:
        data = recv_exactly(s, IDENTIFY_SIZE)
        yield data, s.getsockname()


def test_banner_comes_first_and_unprompted(identify) -> None:
    data, _ = identify
    assert wire.BANNER == b"ceph v027"
    assert data[:9] == wire.BANNER
    wire.check_banner(data)


def test_mon_address_is_its_v1_bind_address(identify, ceph_mon: CephMon) -> None:
    data, _ = identify
    mon = EntityAddr.decode_legacy(data, 9)
    assert (mon.ip, mon.port, mon.nonce) == ("127.0.0.1", ceph_mon.port, 0)
    assert mon.type == EntityAddr.TYPE_LEGACY
    # On the wire the legacy type is 0 and the family is big-endian AF_INET.
    assert data[9:13] == bytes(4)
    assert data[17:19] == b"\x00\x02"
    assert data[19:21] == ceph_mon.port.to_bytes(2, "big")


def test_second_address_is_our_socket_as_the_mon_sees_it(identify) -> None:
    data, (our_ip, our_port) = identify
    seen = EntityAddr.decode_legacy(data, 9 + 136)
    assert (seen.ip, seen.port) == (our_ip, our_port) == ("127.0.0.1", our_port)
    assert seen.nonce == 0


def test_unpack_server_identify_agrees(identify, ceph_mon: CephMon) -> None:
    data, (_, our_port) = identify
    mon, seen = wire.unpack_server_identify(data)
    assert str(mon) == f"v1:127.0.0.1:{ceph_mon.port}/0"
    assert seen.port == our_port


def test_our_legacy_encoding_matches_the_mon_byte_for_byte(identify) -> None:
    data, _ = identify
    for off in (9, 9 + 136):
        addr = EntityAddr.decode_legacy(data, off)
        assert addr.encode_legacy() == data[off:off + 136]


def test_a_corrupted_banner_is_rejected(identify) -> None:
    data, _ = identify
    bad = b"ceph v2\n" + data[8:]
    with pytest.raises(BadBannerError):
        wire.check_banner(bad)


# --- the recorded sessions in tests/data, decoded with msgr.wire ----------------

DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("stem,footer", [("real_mon_session", wire.MsgFooter),
                                         ("real_mon_session_old_footer", wire.MsgFooterOld),
                                         ("real_mon_session_minimal", wire.MsgFooterOld)])
def test_recorded_mon_frames_decode(stem: str, footer: type) -> None:
    doc = json.loads((DATA_DIR / f"{stem}.json").read_text())
    assert footer.SIZE == doc["footer_size"]
    msgs = [e for e in doc["events"] if e["kind"] == "msg"]
    for e in msgs:
        head = wire.MsgHeader.unpack(bytes.fromhex(e["header"]), check_crc=True)
        assert (head.type, head.seq, head.tid, head.version, head.compat_version) == (
            e["type"], e["seq"], e["tid"], e["version"], e["compat_version"])
        assert (head.front_len, head.data_len) == (len(e["front"]) // 2, len(e["data"]) // 2)
        foot = footer.unpack(bytes.fromhex(e["footer"]))
        assert foot.front_crc == crc32c(0, bytes.fromhex(e["front"]))
        assert foot.data_crc == crc32c(0, bytes.fromhex(e["data"]))
        assert foot.flags == 1


def test_recorded_header_with_a_flipped_bit_fails_crc() -> None:
    doc = json.loads((DATA_DIR / "real_mon_session.json").read_text())
    head = bytearray(bytes.fromhex(next(e for e in doc["events"] if e["kind"] == "msg")["header"]))
    head[0] ^= 1
    with pytest.raises(BadCrcError):
        wire.MsgHeader.unpack(bytes(head), check_crc=True)


def test_recorded_connect_replies_decode() -> None:
    doc = json.loads((DATA_DIR / "real_mon_connect_replies.json").read_text())
    for name, case in doc["cases"].items():
        ev = next(e for e in case["events"] if e["kind"] == "connect_reply")
        reply = wire.ConnectReply.unpack(bytes.fromhex(ev["hex"]))
        assert (reply.tag, hex(reply.features), reply.global_seq, reply.connect_seq, reply.flags) == (
            ev["tag"], ev["features"], ev["global_seq"], ev["connect_seq"], ev["flags"]), name
        ident = next(e for e in case["events"] if e["kind"] == "server_identify")
        mon, _ = wire.unpack_server_identify(bytes.fromhex(ident["hex"]))
        assert str(mon) == doc["mon_addr"]
