"""A scripted msgr v1 client on a plain socket, for tests that must send what pymsgr never would.

``open_session(addr)`` performs the client handshake (auth none, no RECONNECT_SEQ so the server
answers READY) and returns the socket in OPEN; ``frame(...)`` builds one complete MSG frame with
correct CRCs around any type and payload.
"""
from __future__ import annotations

import socket

from msgr import EntityAddr, EntityName
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

FEATURES = FEATURES_SUPPORTED_DEFAULT & ~RECONNECT_SEQ  # READY, not SEQ: fewer bytes to script


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_closed(s: socket.socket) -> bytes:
    """Everything the peer sends until it closes (the socket's timeout bounds the wait)."""
    got = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


def connect_msg(peer_type: int = EntityName.TYPE_OSD, **over: int) -> bytes:
    cm = ConnectMsg(features=FEATURES, host_type=EntityName.TYPE_CLIENT, global_seq=1, connect_seq=0,
                    protocol_version=proto_version(EntityName.TYPE_CLIENT, peer_type, True),
                    authorizer_protocol=0, authorizer_len=0, flags=1)
    for k, v in over.items():
        setattr(cm, k, v)
    return cm.pack()


def my_addr(nonce: int = 555) -> bytes:
    return EntityAddr(EntityAddr.TYPE_LEGACY, nonce, "127.0.0.1", 0).encode_legacy()


def open_session(addr: EntityAddr, peer_type: int = EntityName.TYPE_OSD, nonce: int = 555,
                 timeout: float = 10) -> socket.socket:
    """A client socket in OPEN against a pymsgr server at ``addr``."""
    s = socket.create_connection(addr.sockaddr(), timeout=timeout)
    recv_exact(s, SERVER_IDENTIFY_SIZE)
    s.sendall(BANNER + my_addr(nonce) + connect_msg(peer_type))
    reply = ConnectReply.unpack(recv_exact(s, ConnectReply.SIZE))
    if reply.tag != Tag.READY:
        s.close()
        raise ConnectionError(f"server answered {reply}")
    recv_exact(s, reply.authorizer_len)
    return s


def frame(msg_type: int, seq: int, front: bytes = b"", middle: bytes = b"", data: bytes = b"",
          src_num: int = 555) -> bytes:
    """One MSG frame (tag, 53-byte header, segments, 21-byte footer) with valid CRCs."""
    h = MsgHeader(seq=seq, tid=seq, type=msg_type, priority=127, version=1, front_len=len(front),
                  middle_len=len(middle), data_len=len(data), src_type=EntityName.TYPE_CLIENT,
                  src_num=src_num, compat_version=1)
    footer = MsgFooter(front_crc=crc32c(0, front) if front else 0, middle_crc=crc32c(0, middle) if middle else 0,
                       data_crc=crc32c(0, data) if data else 0, flags=FOOTER_COMPLETE).pack()
    return bytes((Tag.MSG,)) + h.pack() + front + middle + data + footer
