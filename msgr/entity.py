"""Entity names and addresses: who a peer is and where it listens.

``EntityName`` is Ceph's ``entity_name_t`` (type + number, e.g. ``osd.3``).
``EntityAddr`` is ``entity_addr_t`` with its two encodings: the legacy
136-byte form used in the v1 handshake (``sockaddr_storage`` whose family and
port are big-endian) and the newer marker form used inside message payloads.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

from msgr._typing import BytesLike
from msgr.errors import BadAddressError, DecodeError, ShortBufferError

AF_INET = 2
AF_INET6 = 10  # Linux value; it is what goes on the wire

LEGACY_ADDR_SIZE = 136

# The handshake packs and compares the same few addresses on every connect: this cache keeps
# ipaddress parsing (tens of microseconds per handshake) off that path. Values are immutable bytes.
@functools.lru_cache(maxsize=1024)
def _packed_ip(ip: str) -> bytes:
    """An IP's network-order bytes (4 or 16)."""
    return ipaddress.ip_address(ip).packed


_TYPE_NAMES = {1: "mon", 2: "mds", 4: "osd", 8: "client", 16: "mgr", 0x20: "auth"}


class EntityName:
    """``entity_name_t``: an entity type and number; monitors may carry a name id."""

    TYPE_MON = 1
    TYPE_MDS = 2
    TYPE_OSD = 4
    TYPE_CLIENT = 8
    TYPE_MGR = 16
    TYPE_AUTH = 0x20
    NEW = -1  # number of a client before it has a global_id

    __slots__ = ("type", "num", "id")

    def __init__(self, type: int, num: int = NEW, id: str | None = None) -> None:
        self.type = type
        self.num = num
        self.id = id

    @classmethod
    def mon(cls, name: str | int = 0, rank: int = 0) -> EntityName:
        """A monitor: ``mon(3)`` is ``mon.3``; ``mon("a", rank=0)`` is ``mon.a`` (rank 0)."""
        if isinstance(name, int):
            return cls(cls.TYPE_MON, name)
        return cls(cls.TYPE_MON, rank, name)

    @classmethod
    def mds(cls, num: int) -> EntityName:
        """``mds.<num>``."""
        return cls(cls.TYPE_MDS, num)

    @classmethod
    def osd(cls, num: int) -> EntityName:
        """``osd.<num>``."""
        return cls(cls.TYPE_OSD, num)

    @classmethod
    def client(cls, num: int = NEW) -> EntityName:
        """``client.<num>``; a client without a global id yet is ``client.-1`` (:attr:`NEW`)."""
        return cls(cls.TYPE_CLIENT, num)

    @classmethod
    def mgr(cls, num: int) -> EntityName:
        """``mgr.<num>``."""
        return cls(cls.TYPE_MGR, num)

    @staticmethod
    def type_name(type: int) -> str:
        """Ceph's name of an entity type number (``4`` -> ``"osd"``)."""
        return _TYPE_NAMES.get(type, f"type{type}")

    @property
    def type_str(self) -> str:
        """This name's type as text (``"osd"``)."""
        return self.type_name(self.type)

    def __str__(self) -> str:
        return f"{self.type_str}.{self.id if self.id is not None else self.num}"

    def __repr__(self) -> str:
        return f"EntityName({self})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EntityName) and self.type == other.type
                and self.num == other.num and self.id == other.id)

    def __hash__(self) -> int:
        return hash((self.type, self.num, self.id))


@dataclass(frozen=True, slots=True)
class EntityAddr:
    """``entity_addr_t``: address type, nonce (process instance), IP and port."""

    TYPE_NONE = 0
    TYPE_LEGACY = 1  # "v1"
    TYPE_MSGR2 = 2   # "v2"
    TYPE_ANY = 3

    type: int = 1
    nonce: int = 0
    ip: str = "0.0.0.0"
    port: int = 0
    family: int = AF_INET

    def __init__(self, type: int = 1, nonce: int = 0, ip: str = "0.0.0.0", port: int = 0,
                 family: int = AF_INET) -> None:
        # the dataclass's own __init__ of a frozen class calls object.__setattr__ per field; the
        # slots' own setters are ~40% faster (several addresses are made per accepted session)
        _set_type(self, type)
        _set_nonce(self, nonce)
        _set_ip(self, ip)
        _set_port(self, port)
        _set_family(self, family)

    # --- construction ----------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> EntityAddr:
        """Parse ``v1:127.0.0.1:6789/123``, ``127.0.0.1:0``, ``v1:[::1]:6789``."""
        s = text.strip()
        typ = cls.TYPE_LEGACY
        for prefix, t in (("v1:", cls.TYPE_LEGACY), ("v2:", cls.TYPE_MSGR2), ("any:", cls.TYPE_ANY)):
            if s.startswith(prefix):
                typ, s = t, s[len(prefix):]
                break
        nonce = 0
        if "/" in s:
            s, _, n = s.rpartition("/")
            try:
                nonce = int(n)
            except ValueError:
                raise BadAddressError(f"bad nonce in address {text!r}") from None
        if s.startswith("["):
            host, sep, port_s = s[1:].partition("]:")
            if not sep:
                raise BadAddressError(f"bad IPv6 address {text!r}")
        else:
            host, sep, port_s = s.rpartition(":")
            if not sep:
                host, port_s = s, "0"
        try:
            port = int(port_s)
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise BadAddressError(f"bad address {text!r}") from None
        if not 0 <= port <= 0xFFFF or not 0 <= nonce <= 0xFFFFFFFF:
            raise BadAddressError(f"port or nonce out of range in {text!r}")
        family = AF_INET6 if ip.version == 6 else AF_INET
        return cls(typ, nonce, str(ip), port, family)

    @classmethod
    def from_sockaddr(cls, sockaddr: tuple[Any, ...], nonce: int = 0, type: int = TYPE_LEGACY) -> EntityAddr:
        """From a socket address tuple as ``socket.getpeername()`` returns it (``(ip, port, ...)``)."""
        ip = sockaddr[0]
        family = AF_INET6 if ":" in ip else AF_INET
        return cls(type, nonce, ip, sockaddr[1], family)

    def with_nonce(self, nonce: int) -> EntityAddr:
        """A copy with another nonce."""
        return self.__class__(self.type, nonce, self.ip, self.port, self.family)   # not replace(): 5x slower

    def with_port(self, port: int) -> EntityAddr:
        """A copy with another port."""
        return self.__class__(self.type, self.nonce, self.ip, port, self.family)

    def with_ip(self, ip: str) -> EntityAddr:
        """A copy with another IP (the family follows it)."""
        family = AF_INET6 if ":" in ip else AF_INET
        return self.__class__(self.type, self.nonce, ip, self.port, family)

    def with_type(self, type: int) -> EntityAddr:
        """A copy with another address type (``TYPE_LEGACY`` is ``v1:``)."""
        return self.__class__(type, self.nonce, self.ip, self.port, self.family)

    # --- queries ---------------------------------------------------------
    def is_blank_ip(self) -> bool:
        """True for ``0.0.0.0`` and ``::`` (bound to any address; the peer fills it in)."""
        return not any(_packed_ip(self.ip))

    def sockaddr(self) -> tuple[str, int]:
        """``(ip, port)`` for ``socket.connect``/``bind``."""
        return (self.ip, self.port)

    @property
    def socket_family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return socket.AF_INET6 if self.family == AF_INET6 else socket.AF_INET

    def __str__(self) -> str:
        prefix = {self.TYPE_LEGACY: "v1:", self.TYPE_MSGR2: "v2:", self.TYPE_ANY: "any:"}.get(self.type, "-:")
        host = f"[{self.ip}]" if self.family == AF_INET6 else self.ip
        return f"{prefix}{host}:{self.port}/{self.nonce}"

    def legacy_cmp_key(self) -> bytes:
        """Bytes ordered as Ceph's ``memcmp`` of two in-memory legacy addresses.

        Connection races are decided by this order (type, nonce as
        little-endian bytes, then the sockaddr with a host-order family),
        which is not the numeric order of IP and port.
        """
        return _legacy_cmp_key(self)

    # --- legacy (v1 handshake) encoding ----------------------------------
    def encode_legacy(self) -> bytes:
        """The 136-byte legacy form (type written as 0, family and port big-endian)."""
        return _encode_legacy(self)

    @classmethod
    def decode_legacy(cls, buf: BytesLike, offset: int = 0) -> EntityAddr:
        """Read the 136-byte legacy form at ``offset`` (the inverse of :meth:`encode_legacy`)."""
        if len(buf) - offset < LEGACY_ADDR_SIZE:
            raise ShortBufferError("entity_addr_t (legacy)", LEGACY_ADDR_SIZE, max(0, len(buf) - offset))
        # one unpack of the IPv4 layout (_LEGACY_V4's fields): family and port are big-endian
        _type, nonce, be_family, be_port, ip4 = _LEGACY_V4_HEAD(buf, offset)
        family, port = _swap16(be_family), _swap16(be_port)
        if family == AF_INET:
            # inet_ntop's dotted quad is str(IPv4Address(...)) without its parsing cost
            ip = socket.inet_ntop(socket.AF_INET, ip4)
        elif family == AF_INET6:
            ip = str(ipaddress.IPv6Address(bytes(buf[offset + 16:offset + 32])))
        elif family == 0:
            ip, family = "0.0.0.0", AF_INET  # an empty address counts as blank
        else:
            raise BadAddressError(f"entity_addr_t: unknown address family {family}")
        return cls(cls.TYPE_LEGACY, nonce, ip, port, family)

    # --- new (marker) encoding used inside payloads ----------------------
    def encode(self, features: int = 0) -> bytes:
        """Encode for a message payload: the marker form if MSG_ADDR2 is negotiated."""
        from msgr.features import MSG_ADDR2, has_feature
        if not has_feature(features, MSG_ADDR2):
            return self.encode_legacy()
        if self.family == AF_INET6:
            sa = (struct.pack("<H", AF_INET6) + struct.pack(">HI", self.port, 0)
                  + _packed_ip(self.ip) + b"\0\0\0\0")
        elif self.is_blank_ip() and self.port == 0 and self.type == self.TYPE_NONE:
            sa = b""
        else:
            sa = (struct.pack("<H", AF_INET) + struct.pack(">H", self.port)
                  + _packed_ip(self.ip) + bytes(8))
        body = struct.pack("<III", self.type, self.nonce, len(sa)) + sa
        return struct.pack("<BBBI", 1, 1, 1, len(body)) + body

    @classmethod
    def decode(cls, buf: BytesLike, offset: int = 0) -> tuple[EntityAddr, int]:
        """Decode either encoding; returns (addr, offset after it)."""
        if len(buf) - offset < 1:
            raise ShortBufferError("entity_addr_t", 1, 0)
        marker = buf[offset]
        if marker == 0:
            return cls.decode_legacy(buf, offset), offset + LEGACY_ADDR_SIZE
        if marker != 1:
            raise BadAddressError(f"entity_addr_t: unknown marker {marker}")
        if len(buf) - offset < 7:
            raise ShortBufferError("entity_addr_t", 7, len(buf) - offset)
        _m, _v, compat, blen = struct.unpack_from("<BBBI", buf, offset)
        if compat > 1:
            raise DecodeError(f"entity_addr_t: compat {compat} too new")
        body = offset + 7
        end = body + blen
        if blen < 12 or end > len(buf):
            raise ShortBufferError("entity_addr_t body", blen, len(buf) - body)
        typ, nonce, elen = struct.unpack_from("<III", buf, body)
        if 12 + elen > blen:
            raise BadAddressError(f"entity_addr_t: sockaddr length {elen} exceeds body {blen}")
        sa = bytes(buf[body + 12: body + 12 + elen])
        if elen == 0:
            return cls(typ, nonce, "0.0.0.0", 0, AF_INET), end
        if elen < 2:
            raise BadAddressError("entity_addr_t: truncated sockaddr")
        family = struct.unpack_from("<H", sa)[0]
        port = struct.unpack_from(">H", sa, 2)[0] if elen >= 4 else 0
        if family == AF_INET and elen >= 8:
            return cls(typ, nonce, str(ipaddress.IPv4Address(sa[4:8])), port, AF_INET), end
        if family == AF_INET6 and elen >= 24:
            return cls(typ, nonce, str(ipaddress.IPv6Address(sa[8:24])), port, AF_INET6), end
        raise BadAddressError(f"entity_addr_t: unknown family {family} / length {elen}")


_set_type, _set_nonce, _set_ip, _set_port, _set_family = (
    EntityAddr.__dict__[f].__set__ for f in ("type", "nonce", "ip", "port", "family"))


# The legacy forms in one struct each: entity_addr_t's sockaddr has its family and port in network
# order (the cmp key a host-order family), so those go in byte-swapped into little-endian fields.
# No cache: packing is cheaper than hashing a fresh peer address (a new port per session) into one.
_LEGACY_V4 = struct.Struct("<IIHH4s120x")          # type (0), nonce, family, port, ip, rest of storage
_LEGACY_V6 = struct.Struct("<IIHHI16sI100x")       # ... flowinfo, ip, scope id
_CMP_V4 = struct.Struct("<IIHH4s20x")              # type, nonce, family, port, ip, to sizeof(sockaddr_in6)
_CMP_V6 = struct.Struct("<IIHHI16sI")
_BE_INET, _BE_INET6 = AF_INET << 8, AF_INET6 << 8  # network-order family as a little-endian u16
_LEGACY_V4_HEAD = struct.Struct("<IIHH4s").unpack_from   # decode_legacy: the fields up to an IPv4 address


def _swap16(v: int) -> int:
    """A u16's two bytes swapped: network order read as little-endian, or the reverse."""
    return ((v & 0xFF) << 8) | (v >> 8)


def _encode_legacy(addr: EntityAddr) -> bytes:
    swapped = _swap16(addr.port)
    if addr.family == AF_INET6:
        return _LEGACY_V6.pack(0, addr.nonce, _BE_INET6, swapped, 0, _packed_ip(addr.ip), 0)
    return _LEGACY_V4.pack(0, addr.nonce, _BE_INET, swapped, _packed_ip(addr.ip))


def _legacy_cmp_key(addr: EntityAddr) -> bytes:
    swapped = _swap16(addr.port)
    if addr.family == AF_INET6:
        return _CMP_V6.pack(EntityAddr.TYPE_LEGACY, addr.nonce, AF_INET6, swapped, 0, _packed_ip(addr.ip), 0)
    return _CMP_V4.pack(EntityAddr.TYPE_LEGACY, addr.nonce, AF_INET, swapped, _packed_ip(addr.ip))


def encode_addrvec(addrs: list[EntityAddr], features: int = 0) -> bytes:
    """``entity_addrvec_t``: marker 2 + list with MSG_ADDR2, else one legacy address."""
    from msgr.features import MSG_ADDR2, has_feature
    if not has_feature(features, MSG_ADDR2):
        legacy = next((a for a in addrs if a.type == EntityAddr.TYPE_LEGACY), EntityAddr())
        return legacy.encode_legacy()
    return b"\x02" + struct.pack("<I", len(addrs)) + b"".join(a.encode(features) for a in addrs)


def decode_addrvec(buf: BytesLike, offset: int = 0, max_count: int = 1024) -> tuple[list[EntityAddr], int]:
    if len(buf) - offset < 1:
        raise ShortBufferError("entity_addrvec_t", 1, 0)
    marker = buf[offset]
    if marker in (0, 1):
        addr, off = EntityAddr.decode(buf, offset)
        return [addr], off
    if marker != 2:
        raise BadAddressError(f"entity_addrvec_t: unknown marker {marker}")
    if len(buf) - offset < 5:
        raise ShortBufferError("entity_addrvec_t", 5, len(buf) - offset)
    (count,) = struct.unpack_from("<I", buf, offset + 1)
    if count > max_count:
        raise BadAddressError(f"entity_addrvec_t: {count} addresses is impossible")
    off = offset + 5
    out = []
    for _ in range(count):
        addr, off = EntityAddr.decode(buf, off)
        out.append(addr)
    return out, off
