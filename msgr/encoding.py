"""Ceph's ``encode()``/``decode()`` rules for message payloads (docs/PROTOCOL.md §10.1).

:class:`Decoder` reads a buffer through a memoryview with bounds checks on
every field; :class:`Encoder` appends to one bytearray. Versioned structs
use ``ENCODE_START``-style envelopes (u8 struct_v, u8 struct_compat, u32
struct_len): :meth:`Decoder.versioned` limits reads to the struct's body,
skips the trailing bytes a newer encoder added, and refuses a struct whose
compat version is newer than ours.

Every malformed input raises a :class:`~msgr.errors.DecodeError` subclass.
Counts and lengths are checked against the bytes that are actually left
before anything is allocated, so a hostile ``u32`` cannot make us reserve
gigabytes.
"""
from __future__ import annotations

import builtins
import contextlib
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from msgr.entity import EntityAddr, EntityName, decode_addrvec, encode_addrvec
from msgr.errors import BadLengthError, DecodeError, ShortBufferError

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

__all__ = ["Decoder", "Encoder", "AuthEntityName", "Utime", "VersionTooNewError"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
# sortable elements: std::set and std::map keys are encoded in order
S = TypeVar("S", bound="SupportsRichComparison")
SK = TypeVar("SK", bound="SupportsRichComparison")

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S16 = struct.Struct("<h")
_S32 = struct.Struct("<i")
_S64 = struct.Struct("<q")
_VHEAD = struct.Struct("<BBI")
_NAME = struct.Struct("<Bq")
_UTIME = struct.Struct("<II")


class VersionTooNewError(DecodeError):
    """A versioned struct whose compat version is newer than the decoder's."""


@dataclass(frozen=True, slots=True)
class Utime:
    """``utime_t``: seconds and nanoseconds (both u32 on the wire)."""

    sec: int = 0
    nsec: int = 0

    def __float__(self) -> float:
        return self.sec + self.nsec / 1e9


@dataclass(frozen=True, slots=True)
class AuthEntityName:
    """The auth ``EntityName`` (``client.admin``): u32 type + string id."""

    type: int = EntityName.TYPE_CLIENT
    id: str = "admin"

    def __str__(self) -> str:
        return f"{EntityName.type_name(self.type)}.{self.id}"


class Decoder:
    """Bounds-checked little-endian reader over ``buf[offset:end]``."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf: bytes | bytearray | memoryview, offset: int = 0,
                 end: int | None = None, what: str = "payload") -> None:
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" \
            else buf
        n = len(self.buf)
        self.end = n if end is None else end
        if not 0 <= offset <= self.end <= n:
            raise ShortBufferError(what, self.end, n)
        self.pos = offset
        self.what = what

    # --- position --------------------------------------------------------
    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def need(self, n: int, what: str | None = None) -> None:
        if n > self.end - self.pos:
            raise ShortBufferError(what or self.what, n, self.end - self.pos)

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def _unpack(self, st: struct.Struct, what: str) -> int:
        if st.size > self.end - self.pos:
            raise ShortBufferError(f"{self.what}: {what}", st.size, self.end - self.pos)
        v: int
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    # --- scalars ---------------------------------------------------------
    def u8(self) -> int:
        return self._unpack(_U8, "u8")

    def u16(self) -> int:
        return self._unpack(_U16, "u16")

    def u32(self) -> int:
        return self._unpack(_U32, "u32")

    def u64(self) -> int:
        return self._unpack(_U64, "u64")

    def s16(self) -> int:
        return self._unpack(_S16, "s16")

    def s32(self) -> int:
        return self._unpack(_S32, "s32")

    def s64(self) -> int:
        return self._unpack(_S64, "s64")

    def bool(self) -> bool:
        return self.u8() != 0

    def raw(self, n: int) -> bytes:
        """``n`` raw bytes (no length prefix)."""
        if n < 0:
            raise BadLengthError(f"{self.what}: negative length {n}")
        self.need(n)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    # --- length-prefixed -------------------------------------------------
    def length(self, min_item_size: int = 1, what: str = "length") -> int:
        """A u32 count/length checked against what is left (``count*min_item_size``)."""
        n = self.u32()
        if n * min_item_size > self.end - self.pos:
            raise BadLengthError(f"{self.what}: {what} {n} exceeds the {self.end - self.pos} "
                                 f"bytes left")
        return n

    def bytes(self) -> bytes:
        """A ``bufferlist`` field: u32 length + bytes."""
        return self.raw(self.length(1, "bufferlist length"))

    def string(self) -> str:
        """``std::string`` as text; bytes that are not UTF-8 survive as surrogates."""
        return self.raw(self.length(1, "string length")).decode("utf-8", "surrogateescape")

    def list(self, elem: Callable[[Decoder], T], min_item_size: int = 1) -> list[T]:
        """``vector``/``list``: u32 count + elements (each at least ``min_item_size`` bytes)."""
        n = self.length(max(1, min_item_size), "element count")
        return [elem(self) for _ in range(n)]

    def set(self, elem: Callable[[Decoder], T], min_item_size: int = 1) -> set[T]:
        return set(self.list(elem, min_item_size))

    def map(self, key: Callable[[Decoder], K], value: Callable[[Decoder], V],
            min_item_size: int = 1) -> dict[K, V]:
        """``std::map``: u32 count + (key, value) pairs."""
        n = self.length(max(1, min_item_size), "map size")
        out: dict[K, V] = {}
        for _ in range(n):
            k = key(self)
            out[k] = value(self)
        return out

    # --- Ceph types ------------------------------------------------------
    def uuid(self) -> uuid.UUID:
        """``uuid_d`` / ``ceph_fsid``: 16 raw bytes."""
        return uuid.UUID(bytes=self.raw(16))

    def utime(self) -> Utime:
        self.need(8, f"{self.what}: utime_t")
        sec, nsec = _UTIME.unpack_from(self.buf, self.pos)
        self.pos += 8
        return Utime(sec, nsec)

    def entity_name(self) -> EntityName:
        """``entity_name_t``: u8 type + s64 num."""
        self.need(9, f"{self.what}: entity_name_t")
        typ, num = _NAME.unpack_from(self.buf, self.pos)
        self.pos += 9
        return EntityName(typ, num)

    def auth_entity_name(self) -> AuthEntityName:
        """The auth ``EntityName``: u32 type + string id."""
        typ = self.u32()
        return AuthEntityName(typ, self.string())

    def entity_addr(self) -> EntityAddr:
        """``entity_addr_t`` in either encoding (legacy 136 bytes or marker form)."""
        addr, self.pos = EntityAddr.decode(self.buf[:self.end], self.pos)
        return addr

    def entity_addrvec(self) -> builtins.list[EntityAddr]:
        addrs, self.pos = decode_addrvec(self.buf[:self.end], self.pos, max_count=self.remaining())
        return addrs

    # --- versioned envelopes ----------------------------------------------
    @contextlib.contextmanager
    def versioned(self, ours: int, what: str) -> Iterator[int]:
        """``DECODE_START``: yields struct_v; the body is read inside the block.

        Reads past struct_len raise; bytes the block leaves unread (fields
        of a newer version) are skipped on exit.
        """
        self.need(6, f"{what}: struct header")
        v, compat, blen = _VHEAD.unpack_from(self.buf, self.pos)
        if compat > ours:
            raise VersionTooNewError(f"{what}: struct_compat {compat} > our version {ours}")
        body = self.pos + 6
        if blen > self.end - body:
            raise BadLengthError(f"{what}: struct_len {blen} exceeds the {self.end - body} bytes left")
        outer_end, outer_what = self.end, self.what
        self.pos, self.end, self.what = body, body + blen, what
        try:
            yield v
        finally:
            self.end, self.what = outer_end, outer_what
        self.pos = body + blen


class Encoder:
    """Appends Ceph encodings to one bytearray; :meth:`getvalue` returns bytes."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def __len__(self) -> int:
        return len(self.buf)

    def u8(self, v: int) -> Encoder:
        self.buf += _U8.pack(v)
        return self

    def u16(self, v: int) -> Encoder:
        self.buf += _U16.pack(v)
        return self

    def u32(self, v: int) -> Encoder:
        self.buf += _U32.pack(v)
        return self

    def u64(self, v: int) -> Encoder:
        self.buf += _U64.pack(v)
        return self

    def s16(self, v: int) -> Encoder:
        self.buf += _S16.pack(v)
        return self

    def s32(self, v: int) -> Encoder:
        self.buf += _S32.pack(v)
        return self

    def s64(self, v: int) -> Encoder:
        self.buf += _S64.pack(v)
        return self

    def bool(self, v: bool) -> Encoder:
        self.buf.append(1 if v else 0)
        return self

    def raw(self, b: bytes | bytearray | memoryview) -> Encoder:
        self.buf += b
        return self

    def bytes(self, b: bytes | bytearray | memoryview) -> Encoder:
        self.buf += _U32.pack(len(b))
        self.buf += b
        return self

    def string(self, s: str | builtins.bytes) -> Encoder:
        return self.bytes(s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s)

    def list(self, items: Iterable[T], elem: Callable[[Encoder, T], Any]) -> Encoder:
        items = list(items)
        self.u32(len(items))
        for it in items:
            elem(self, it)
        return self

    def set(self, items: Iterable[S], elem: Callable[[Encoder, S], Any]) -> Encoder:
        return self.list(sorted(items), elem)  # std::set iterates in order

    def map(self, m: Mapping[SK, V], key: Callable[[Encoder, SK], Any],
            value: Callable[[Encoder, V], Any]) -> Encoder:
        self.u32(len(m))
        for k in sorted(m):  # std::map iterates in key order
            key(self, k)
            value(self, m[k])
        return self

    def uuid(self, u: uuid.UUID | str) -> Encoder:
        self.buf += (u if isinstance(u, uuid.UUID) else uuid.UUID(u)).bytes
        return self

    def utime(self, t: Utime) -> Encoder:
        self.buf += _UTIME.pack(t.sec, t.nsec)
        return self

    def entity_name(self, n: EntityName) -> Encoder:
        self.buf += _NAME.pack(n.type, n.num)
        return self

    def auth_entity_name(self, n: AuthEntityName) -> Encoder:
        return self.u32(n.type).string(n.id)

    def entity_addr(self, a: EntityAddr, features: int) -> Encoder:
        self.buf += a.encode(features)
        return self

    def entity_addrvec(self, addrs: builtins.list[EntityAddr], features: int) -> Encoder:
        self.buf += encode_addrvec(addrs, features)
        return self

    @contextlib.contextmanager
    def versioned(self, v: int, compat: int) -> Iterator[Encoder]:
        """``ENCODE_START(v, compat)``; struct_len is patched in when the block ends."""
        start = len(self.buf)
        self.buf += _VHEAD.pack(v, compat, 0)
        yield self
        _U32.pack_into(self.buf, start + 2, len(self.buf) - start - 6)


# Element codecs for list/map helpers, named like the Ceph types.
def dec_string(d: Decoder) -> str:
    return d.string()


def dec_u32(d: Decoder) -> int:
    return d.u32()


def dec_s32(d: Decoder) -> int:
    return d.s32()


def dec_u64(d: Decoder) -> int:
    return d.u64()


def enc_string(e: Encoder, s: str) -> None:
    e.string(s)


def enc_u32(e: Encoder, v: int) -> None:
    e.u32(v)


def enc_s32(e: Encoder, v: int) -> None:
    e.s32(v)


def enc_u64(e: Encoder, v: int) -> None:
    e.u64(v)
