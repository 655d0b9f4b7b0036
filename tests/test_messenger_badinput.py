"""Bad input from a raw socket, at every handshake step and in OPEN.

Each case: that one connection faults with a logged reason, nothing is
allocated for a bogus length, and the messenger keeps serving a good client.
"""
from __future__ import annotations

import logging
import socket
import struct
import tracemalloc

import pytest

from msgr import Config, EntityAddr, EntityName, Policy
from msgr.crc import crc32c
from msgr.features import FEATURES_SUPPORTED_DEFAULT, RECONNECT_SEQ
from msgr.wire import (
    BANNER,
    FOOTER_COMPLETE,
    SERVER_IDENTIFY_SIZE,
    ConnectMsg,
    ConnectReply,
    MsgFooter,
    MsgHeader,
    Tag,
    proto_version,
)

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

from test_messenger_loopback import MTest, make, wait_for  # noqa: E402

MiB = 1 << 20
FEATURES = FEATURES_SUPPORTED_DEFAULT & ~RECONNECT_SEQ  # READY, not SEQ: fewer bytes to script


@pytest.fixture(scope="module")
def server():
    cfg = Config(ms_max_message_front_len=1 * MiB)
    ms, d = make(EntityName.osd(7), 4242, cfg, policy=Policy.stateless_server())
    yield ms, d
    ms.shutdown()
    ms.wait()


@pytest.fixture(scope="module")
def good_client(server):
    ms, d = make(EntityName.client(9), 99, policy=Policy.lossy_client(), bind=False)
    yield ms
    ms.shutdown()
    ms.wait()


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _raw(server_ms) -> socket.socket:
    s = socket.create_connection(server_ms.get_myaddr().sockaddr(), timeout=10)
    _recv_exact(s, SERVER_IDENTIFY_SIZE)
    return s


def _connect_msg(**over) -> bytes:
    cm = ConnectMsg(features=FEATURES, host_type=EntityName.TYPE_CLIENT, global_seq=1, connect_seq=0,
                    protocol_version=proto_version(EntityName.TYPE_CLIENT, EntityName.TYPE_OSD, True),
                    authorizer_protocol=0, authorizer_len=0, flags=1)
    for k, v in over.items():
        setattr(cm, k, v)
    return cm.pack()


def _my_addr() -> bytes:
    return EntityAddr(EntityAddr.TYPE_LEGACY, 555, "127.0.0.1", 0).encode_legacy()


def _open_session(server_ms) -> socket.socket:
    s = _raw(server_ms)
    s.sendall(BANNER + _my_addr() + _connect_msg())
    reply = ConnectReply.unpack(_recv_exact(s, ConnectReply.SIZE))
    assert reply.tag == Tag.READY, reply
    _recv_exact(s, reply.authorizer_len)
    return s


def _frame(ident: int, front: bytes = b"", *, front_len: int | None = None, bad_crc: bool = False) -> bytes:
    front = struct.pack("<Q", ident) + front
    h = MsgHeader(seq=ident, tid=ident, type=MTest.TYPE, priority=127, version=1,
                  front_len=len(front) if front_len is None else front_len, src_type=EntityName.TYPE_CLIENT,
                  src_num=555, compat_version=1)
    hdr = bytearray(h.pack())
    if bad_crc:
        hdr[-1] ^= 0xFF
    footer = MsgFooter(front_crc=crc32c(0, front), flags=FOOTER_COMPLETE).pack()
    return bytes((Tag.MSG,)) + bytes(hdr) + front + footer


def _faults(caplog, needle: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("msgr") and "fault" in r.getMessage() and needle in r.getMessage()]


def _good_client_still_works(server, good_client, ident: int) -> None:
    ms, d = server
    before = len(d.msgs)
    good_client.connect_to(EntityName.TYPE_OSD, ms.get_myaddr()).send_message(MTest(ident))
    wait_for(lambda: any(m.ident == ident for m in d.msgs[before:]), what="the good client's message")


# case -> (bytes to send, what the logged fault must name)
HANDSHAKE_CASES = {
    "bad_banner": (lambda: b"ceph v999" + _my_addr() + _connect_msg(), "BadBannerError"),
    "bad_addr_family": (lambda: BANNER + _my_addr()[:8] + b"\x12\x34" + _my_addr()[10:] + _connect_msg(),
                        "BadAddressError"),
    "authorizer_len_huge": (lambda: BANNER + _my_addr() + _connect_msg(authorizer_len=0xFFFFFFF0),
                            "authorizer_len 4294967280"),
    # BADPROTOVER reply, then the server waits for another connect: garbage instead
    "bad_proto_version_then_garbage": (lambda: BANNER + _my_addr() + _connect_msg(protocol_version=999)
                                       + b"\xff" * 40, "authorizer_len 4294967295"),
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE_CASES))
def test_garbage_during_handshake(server, good_client, caplog, case):
    caplog.set_level(logging.INFO, logger="msgr")
    ms, d = server
    payload, needle = HANDSHAKE_CASES[case]
    n0 = len(_faults(caplog, needle))
    tracemalloc.start()
    try:
        s = _raw(ms)
        s.sendall(payload())
        # the server gives up on this socket: it closes it (possibly after a reply)
        s.settimeout(10)
        while True:
            try:
                if not s.recv(65536):
                    break
            except ConnectionResetError:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    s.close()
    assert peak < 16 * MiB, f"{peak} bytes allocated for garbage"
    wait_for(lambda: len(_faults(caplog, needle)) > n0, what=f"a logged fault naming {needle}")
    _good_client_still_works(server, good_client, 10_000 + hash(case) % 1000)


def test_truncated_connect_then_eof(server, good_client, caplog):
    caplog.set_level(logging.INFO, logger="msgr")
    ms, d = server
    n0 = len(_faults(caplog, "EOF"))
    s = _raw(ms)
    s.sendall(BANNER + _my_addr() + _connect_msg()[:10])
    s.close()
    wait_for(lambda: len(_faults(caplog, "EOF")) > n0, what="a logged fault")
    _good_client_still_works(server, good_client, 20_001)


OPEN_CASES = {
    "bad_tag": (lambda: b"\xee", "BadTagError"),
    "bad_header_crc": (lambda: _frame(2, bad_crc=True), "BadCrcError"),
    "front_len_above_max": (lambda: _frame(2, front_len=200 * MiB), "ms_max_message_front_len"),
    "truncated_then_eof": (lambda: _frame(2, b"z" * 1000)[:300], "EOF"),
}


@pytest.mark.parametrize("case", sorted(OPEN_CASES))
def test_garbage_in_open(server, good_client, caplog, case):
    caplog.set_level(logging.INFO, logger="msgr")
    ms, d = server
    s = _open_session(ms)
    s.sendall(_frame(1, b"ok"))
    wait_for(lambda: any(m.ident == 1 and m.header.src_num == 555 for m in d.msgs), what="the valid message")
    d.msgs.clear()
    payload, needle = OPEN_CASES[case]
    n0 = len(_faults(caplog, needle))
    tracemalloc.start()
    try:
        s.sendall(payload())
        if case == "truncated_then_eof":
            s.shutdown(socket.SHUT_WR)
        wait_for(lambda: len(_faults(caplog, needle)) > n0, what=f"a logged fault naming {needle}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        s.close()
    assert peak < 16 * MiB, f"{peak} bytes allocated for a bogus frame"
    assert not any(m.ident == 2 for m in d.msgs)
    _good_client_still_works(server, good_client, 30_000 + hash(case) % 1000)


def test_peer_stops_mid_message(server, good_client):
    ms, d = server
    s = _open_session(ms)
    s.sendall(_frame(3, b"q" * 5000)[:2000])  # and then nothing: the peer stalls
    try:
        _good_client_still_works(server, good_client, 40_000)
        assert not any(m.ident == 3 and m.header.src_num == 555 for m in d.msgs)
    finally:
        s.close()
