"""The msgr v1 wire structures: banner, tags, connect/reply, header, footer.

Every structure is a small typed object with ``pack() -> bytes`` and a
classmethod ``unpack(buf, offset=0)``; malformed input raises a subclass of
:class:`msgr.errors.DecodeError`. The header and footer go through
``msgr._cwire`` (C when built, ``struct`` otherwise; identical results).
All integers are little-endian; addresses use the legacy 136-byte form.
"""
from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from typing import Any, NoReturn

from msgr import _cwire
from msgr._typing import BytesLike
from msgr.entity import LEGACY_ADDR_SIZE, EntityAddr
from msgr.errors import BadBannerError, BadLengthError, ShortBufferError

BANNER = b"ceph v027"
BANNER_SIZE = len(BANNER)
#: What the server sends first: banner + its address + the client's address as seen.
SERVER_IDENTIFY_SIZE = BANNER_SIZE + 2 * LEGACY_ADDR_SIZE
#: What the client sends first: banner, then (after validating the server) its address.
CLIENT_IDENTIFY_SIZE = BANNER_SIZE + LEGACY_ADDR_SIZE

HEADER_SIZE = _cwire.HEADER_SIZE
HEADER_OLD_SIZE = _cwire.HEADER_OLD_SIZE
FOOTER_SIZE = _cwire.FOOTER_SIZE
FOOTER_OLD_SIZE = _cwire.FOOTER_OLD_SIZE

CONNECT_LOSSY = 1          # ceph_msg_connect(_reply).flags
FOOTER_COMPLETE = 1        # ceph_msg_footer.flags
FOOTER_NOCRC = 2
FOOTER_SIGNED = 4

#: Ceph asserts reply.authorizer_len < 4096 on the client; the same bound guards our reads.
MAX_AUTHORIZER_LEN = 4096


class Tag(enum.IntEnum):
    READY = 1
    RESETSESSION = 2
    WAIT = 3
    RETRY_SESSION = 4
    RETRY_GLOBAL = 5
    CLOSE = 6
    MSG = 7
    ACK = 8
    KEEPALIVE = 9
    BADPROTOVER = 10
    BADAUTHORIZER = 11
    FEATURES = 12
    SEQ = 13
    KEEPALIVE2 = 14
    KEEPALIVE2_ACK = 15
    CHALLENGE_AUTHORIZER = 16


class Priority(enum.IntEnum):
    LOW = 64
    DEFAULT = 127
    HIGH = 196
    HIGHEST = 255


# protocol_version per peer type (observed on pacific: MON peers speak 13)
MON_PROTOCOL = 13
MONC_PROTOCOL = 15
OSDC_PROTOCOL = 24
MDSC_PROTOCOL = 32
OSD_PROTOCOL = 10
MDS_PROTOCOL = 12


_PEER_PROTOCOL = {1: MON_PROTOCOL, 2: MDS_PROTOCOL, 4: OSD_PROTOCOL}       # between two of a type
_CLIENT_PROTOCOL = {1: MONC_PROTOCOL, 4: OSDC_PROTOCOL, 2: MDSC_PROTOCOL}  # a client of that type


def proto_version(my_type: int, peer_type: int | None, connecting: bool) -> int:
    """The protocol_version a v1 peer expects (Ceph's get_proto_version)."""
    if my_type == peer_type:
        return _PEER_PROTOCOL.get(my_type, 0)
    t = peer_type if connecting else my_type
    if t is None:   # a session that does not know its peer's type yet
        return 0
    return _CLIENT_PROTOCOL.get(t, 0)


#: How much of a wrong banner an error shows (enough to tell an SSH or HTTP peer apart).
BANNER_SHOWN = 16


def check_banner(buf: BytesLike, offset: int = 0, end: int | None = None) -> None:
    """Raise BadBannerError unless ``buf[offset:]`` starts with BANNER (``end``: shown bytes stop there)."""
    if len(buf) - offset < BANNER_SIZE:
        raise ShortBufferError("banner", BANNER_SIZE, max(0, len(buf) - offset))
    if bytes(buf[offset:offset + BANNER_SIZE]) != BANNER:
        _bad_banner(buf, offset, len(buf) if end is None else end)


def check_banner_prefix(buf: BytesLike, offset: int, avail: int) -> None:
    """Raise BadBannerError as soon as the ``avail`` bytes that arrived cannot start BANNER
    (a partial banner that already differs is enough: an HTTP or SSH peer is known at once)."""
    n = min(avail, BANNER_SIZE)
    if bytes(buf[offset:offset + n]) != BANNER[:n]:
        _bad_banner(buf, offset, offset + avail)


def _bad_banner(buf: BytesLike, offset: int, end: int) -> NoReturn:
    got = bytes(buf[offset:min(end, offset + BANNER_SHOWN)])
    raise BadBannerError(f"not a Ceph v1 peer: got {got!r}, expected {BANNER!r}", got)


def _need(what: str, buf: BytesLike, offset: int, size: int) -> None:
    if len(buf) - offset < size:
        raise ShortBufferError(what, size, max(0, len(buf) - offset))


# --- handshake structs ----------------------------------------------------

_CONNECT = struct.Struct("<QIIIIIIB")
_REPLY = struct.Struct("<BQIIIIB")


@dataclass(slots=True)
class ConnectMsg:
    """``ceph_msg_connect`` (33 bytes); the authorizer bytes follow it on the wire."""

    features: int = 0
    host_type: int = 0
    global_seq: int = 0
    connect_seq: int = 0
    protocol_version: int = 0
    authorizer_protocol: int = 0
    authorizer_len: int = 0
    flags: int = 0

    SIZE = _CONNECT.size

    def pack(self) -> bytes:
        return _CONNECT.pack(self.features, self.host_type, self.global_seq, self.connect_seq,
                             self.protocol_version, self.authorizer_protocol, self.authorizer_len, self.flags)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0) -> ConnectMsg:
        _need("ceph_msg_connect", buf, offset, cls.SIZE)
        msg = cls(*_CONNECT.unpack_from(buf, offset))
        if msg.authorizer_len >= MAX_AUTHORIZER_LEN:
            raise BadLengthError(f"ceph_msg_connect: authorizer_len {msg.authorizer_len} is impossible")
        return msg


@dataclass(slots=True)
class ConnectReply:
    """``ceph_msg_connect_reply`` (26 bytes); authorizer reply bytes (and a u64 for SEQ) follow."""

    tag: int = Tag.READY
    features: int = 0
    global_seq: int = 0
    connect_seq: int = 0
    protocol_version: int = 0
    authorizer_len: int = 0
    flags: int = 0

    SIZE = _REPLY.size

    def pack(self) -> bytes:
        return _REPLY.pack(self.tag, self.features, self.global_seq, self.connect_seq,
                           self.protocol_version, self.authorizer_len, self.flags)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0) -> ConnectReply:
        _need("ceph_msg_connect_reply", buf, offset, cls.SIZE)
        reply = cls(*_REPLY.unpack_from(buf, offset))
        if reply.authorizer_len >= MAX_AUTHORIZER_LEN:
            raise BadLengthError(f"ceph_msg_connect_reply: authorizer_len {reply.authorizer_len} is impossible")
        return reply


# --- message framing --------------------------------------------------------

@dataclass(slots=True)
class MsgHeader:
    """``ceph_msg_header`` (53 bytes, used when NOSRCADDR is negotiated)."""

    seq: int = 0
    tid: int = 0
    type: int = 0
    priority: int = Priority.DEFAULT
    version: int = 1
    front_len: int = 0
    middle_len: int = 0
    data_len: int = 0
    data_off: int = 0
    src_type: int = 0
    src_num: int = -1
    compat_version: int = 1
    reserved: int = 0
    crc: int = 0

    SIZE = HEADER_SIZE

    def pack(self) -> bytes:
        """53 bytes with the crc computed over the first 49."""
        return _cwire.pack_header(self.seq, self.tid, self.type, self.priority, self.version,
                                  self.front_len, self.middle_len, self.data_len, self.data_off,
                                  self.src_type, self.src_num, self.compat_version, self.reserved)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0, check_crc: bool = True) -> MsgHeader:
        return cls(*_cwire.parse_header(buf, offset, check_crc))


@dataclass(slots=True)
class MsgHeaderOld:
    """``ceph_msg_header_old`` (334 bytes, pre-NOSRCADDR peers): src carries a full entity_inst."""

    seq: int = 0
    tid: int = 0
    type: int = 0
    priority: int = Priority.DEFAULT
    version: int = 1
    front_len: int = 0
    middle_len: int = 0
    data_len: int = 0
    data_off: int = 0
    src_type: int = 0
    src_num: int = -1
    src_addr: EntityAddr = EntityAddr()
    orig_src_type: int = 0
    orig_src_num: int = -1
    orig_src_addr: EntityAddr = EntityAddr()
    reserved: int = 0
    crc: int = 0

    SIZE = HEADER_OLD_SIZE

    def pack(self) -> bytes:
        return _cwire.pack_header_old(self.seq, self.tid, self.type, self.priority, self.version,
                                      self.front_len, self.middle_len, self.data_len, self.data_off,
                                      self.src_type, self.src_num, self.src_addr.encode_legacy(),
                                      self.orig_src_type, self.orig_src_num, self.orig_src_addr.encode_legacy(),
                                      self.reserved)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0, check_crc: bool = True) -> MsgHeaderOld:
        f: list[Any] = list(_cwire.parse_header_old(buf, offset, check_crc))
        f[11] = EntityAddr.decode_legacy(f[11])
        f[14] = EntityAddr.decode_legacy(f[14])
        return cls(*f)

    def to_header(self) -> MsgHeader:
        """The fields both header forms share, as a current header (crc not carried over)."""
        return MsgHeader(self.seq, self.tid, self.type, self.priority, self.version, self.front_len,
                         self.middle_len, self.data_len, self.data_off, self.src_type, self.src_num,
                         self.version, 0, 0)


@dataclass(slots=True)
class MsgFooter:
    """``ceph_msg_footer`` (21 bytes, MSG_AUTH negotiated)."""

    front_crc: int = 0
    middle_crc: int = 0
    data_crc: int = 0
    sig: int = 0
    flags: int = FOOTER_COMPLETE

    SIZE = FOOTER_SIZE

    def pack(self) -> bytes:
        return _cwire.pack_footer(self.front_crc, self.middle_crc, self.data_crc, self.sig, self.flags, True)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0) -> MsgFooter:
        return cls(*_cwire.parse_footer(buf, offset, True))


@dataclass(slots=True)
class MsgFooterOld:
    """``ceph_msg_footer_old`` (13 bytes, no signature)."""

    front_crc: int = 0
    middle_crc: int = 0
    data_crc: int = 0
    flags: int = FOOTER_COMPLETE

    SIZE = FOOTER_OLD_SIZE

    def pack(self) -> bytes:
        return _cwire.pack_footer(self.front_crc, self.middle_crc, self.data_crc, 0, self.flags, False)

    @classmethod
    def unpack(cls, buf: BytesLike, offset: int = 0) -> MsgFooterOld:
        fc, mc, dc, _sig, flags = _cwire.parse_footer(buf, offset, False)
        return cls(fc, mc, dc, flags)


# --- small frames -------------------------------------------------------------

_TIMESPEC = struct.Struct("<II")
_U64 = struct.Struct("<Q")


def pack_timespec(sec: int, nsec: int) -> bytes:
    return _TIMESPEC.pack(sec & 0xFFFFFFFF, nsec & 0xFFFFFFFF)


def unpack_timespec(buf: BytesLike, offset: int = 0) -> tuple[int, int]:
    _need("ceph_timespec", buf, offset, 8)
    return _TIMESPEC.unpack_from(buf, offset)


def pack_connect_reply(tag: int, features: int, global_seq: int, connect_seq: int, protocol_version: int,
                       authorizer_len: int, flags: int) -> bytes:
    """``ConnectReply(...).pack()`` without building the object (a server's success reply)."""
    return _REPLY.pack(tag, features, global_seq, connect_seq, protocol_version, authorizer_len, flags)


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(buf: BytesLike, offset: int = 0) -> int:
    _need("u64", buf, offset, 8)
    value: int = _U64.unpack_from(buf, offset)[0]
    return value


#: ``pack_ack(seq)``: a cumulative ACK, tag + seq. A partial of a struct's pack, not a def: the
#: write path calls it for most writes of a lossless session, and this costs no Python frame.
pack_ack = functools.partial(struct.Struct("<BQ").pack, int(Tag.ACK))


def pack_keepalive2(sec: int, nsec: int) -> bytes:
    return bytes((Tag.KEEPALIVE2,)) + pack_timespec(sec, nsec)


def pack_keepalive2_ack(stamp: bytes) -> bytes:
    return bytes((Tag.KEEPALIVE2_ACK,)) + bytes(stamp)


def pack_server_identify(my_addr: EntityAddr, peer_addr_seen: EntityAddr) -> bytes:
    return BANNER + my_addr.encode_legacy() + peer_addr_seen.encode_legacy()


def unpack_server_identify(buf: BytesLike, offset: int = 0) -> tuple[EntityAddr, EntityAddr]:
    """Validate the server's 281 bytes; returns (server addr, our addr as the server sees it)."""
    _need("server identify", buf, offset, SERVER_IDENTIFY_SIZE)
    check_banner(buf, offset, offset + SERVER_IDENTIFY_SIZE)
    server = EntityAddr.decode_legacy(buf, offset + BANNER_SIZE)
    seen = EntityAddr.decode_legacy(buf, offset + BANNER_SIZE + LEGACY_ADDR_SIZE)
    return server, seen
