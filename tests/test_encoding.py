"""msgr.encoding: Ceph encode/decode helpers — round trips, exact bytes, typed errors."""
from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgr.encoding import (
    AuthEntityName,
    Decoder,
    Encoder,
    Utime,
    VersionTooNewError,
    dec_string,
    dec_u32,
    enc_string,
    enc_u32,
)
from msgr.entity import EntityAddr, EntityName
from msgr.errors import BadLengthError, DecodeError, ShortBufferError
from msgr.features import CEPH_FEATURES_ALL_PACIFIC

INTS = [("u8", 0, 2**8 - 1, "<B"), ("u16", 0, 2**16 - 1, "<H"), ("u32", 0, 2**32 - 1, "<I"),
        ("u64", 0, 2**64 - 1, "<Q"), ("s16", -2**15, 2**15 - 1, "<h"),
        ("s32", -2**31, 2**31 - 1, "<i"), ("s64", -2**63, 2**63 - 1, "<q")]


@pytest.mark.parametrize("name,lo,hi,fmt", INTS)
def test_ints_little_endian_and_bounds(name: str, lo: int, hi: int, fmt: str) -> None:
    for v in (lo, hi, (lo + hi) // 2):
        b = getattr(Encoder(), name)(v).getvalue()
        assert b == struct.pack(fmt, v)
        d = Decoder(b)
        assert getattr(d, name)() == v and d.at_end()
        with pytest.raises(ShortBufferError):
            getattr(Decoder(b[:-1]), name)()


def test_string_and_bufferlist_layout() -> None:
    assert Encoder().string("admin").getvalue() == b"\x05\x00\x00\x00admin"
    assert Encoder().bytes(b"").getvalue() == b"\0\0\0\0"
    assert Decoder(b"\x02\x00\x00\x00vmXX").string() == "vm"


def test_non_utf8_string_survives_round_trip() -> None:
    raw = b"\x03\x00\x00\x00\xff\xfeA"
    s = Decoder(raw).string()
    assert Encoder().string(s).getvalue() == raw


def test_length_larger_than_remaining_is_badlength_not_allocation() -> None:
    with pytest.raises(BadLengthError):
        Decoder(b"\xff\xff\xff\xff" + b"x" * 10).bytes()
    # a huge element count with few bytes left must fail before building anything
    with pytest.raises(BadLengthError):
        Decoder(struct.pack("<I", 10**9) + bytes(8)).list(dec_u32, 4)
    with pytest.raises(BadLengthError):
        Decoder(struct.pack("<I", 3) + bytes(11)).list(dec_u32, 4)  # 3*4 > 11


def test_map_and_set_are_encoded_in_key_order() -> None:
    b = Encoder().map({"b": 2, "a": 1}, enc_string, enc_u32).getvalue()
    assert b == struct.pack("<I", 2) + b"\1\0\0\0a" + struct.pack("<I", 1) + b"\1\0\0\0b" + struct.pack("<I", 2)
    assert Encoder().set({3, 1}, enc_u32).getvalue() == struct.pack("<III", 2, 1, 3)


def test_ceph_types() -> None:
    u = uuid.uuid4()
    e = (Encoder().uuid(u).utime(Utime(5, 7)).entity_name(EntityName.client(4100))
         .auth_entity_name(AuthEntityName(8, "admin")))
    b = e.getvalue()
    assert b[:16] == u.bytes and b[16:24] == struct.pack("<II", 5, 7)
    assert b[24:33] == struct.pack("<Bq", 8, 4100)
    assert b[33:] == struct.pack("<I", 8) + b"\x05\x00\x00\x00admin"
    d = Decoder(b)
    assert d.uuid() == u and d.utime() == Utime(5, 7)
    assert d.entity_name() == EntityName.client(4100)
    assert str(d.auth_entity_name()) == "client.admin" and d.at_end()


def test_addr_and_addrvec_round_trip() -> None:
    a = EntityAddr.parse("v1:127.0.0.1:6789/0")
    b = Encoder().entity_addr(a, CEPH_FEATURES_ALL_PACIFIC).entity_addrvec([a], CEPH_FEATURES_ALL_PACIFIC)
    d = Decoder(b.getvalue())
    assert d.entity_addr() == a and d.entity_addrvec() == [a] and d.at_end()
    legacy = Encoder().entity_addr(a, 0).getvalue()
    assert len(legacy) == 136 and Decoder(legacy).entity_addr() == a


def _versioned(v: int, compat: int, body: bytes) -> bytes:
    return struct.pack("<BBI", v, compat, len(body)) + body


def test_versioned_skips_unknown_trailing_bytes() -> None:
    buf = _versioned(3, 1, struct.pack("<I", 42) + b"future-field") + b"\x07"
    d = Decoder(buf)
    with d.versioned(2, "thing") as v:
        assert v == 3
        assert d.u32() == 42
    assert d.u8() == 7 and d.at_end()


def test_versioned_refuses_newer_compat_and_bounds_the_body() -> None:
    with pytest.raises(VersionTooNewError):
        with Decoder(_versioned(5, 3, b"")).versioned(2, "thing"):
            pass
    with pytest.raises(BadLengthError):
        with Decoder(struct.pack("<BBI", 1, 1, 100) + bytes(4)).versioned(1, "thing"):
            pass
    # reading past struct_len fails even when the outer buffer has more bytes
    with pytest.raises(ShortBufferError):
        d = Decoder(_versioned(1, 1, b"\1\2") + bytes(8))
        with d.versioned(1, "thing"):
            d.u32()


def test_encoder_versioned_patches_length() -> None:
    e = Encoder()
    with e.versioned(9, 6):
        e.u32(1).string("ab")
    assert e.getvalue() == _versioned(9, 6, struct.pack("<I", 1) + b"\2\0\0\0ab")


@settings(max_examples=200)
@given(st.lists(st.text(max_size=20), max_size=10), st.dictionaries(st.text(max_size=8),
       st.integers(0, 2**32 - 1), max_size=8), st.binary(max_size=64), st.integers(0, 255), st.integers(0, 255))
def test_round_trip(strings: list[str], mapping: dict[str, int], blob: bytes, v: int, extra: int) -> None:
    e = Encoder()
    with e.versioned(v, min(v, 1)):
        e.list(strings, enc_string).map(mapping, enc_string, enc_u32).bytes(blob)
        e.raw(bytes(extra % 5))  # trailing bytes a "newer" encoder added
    e.u8(extra)
    d = Decoder(e.getvalue())
    with d.versioned(255, "rt") as got_v:
        assert got_v == v
        assert d.list(dec_string, 4) == strings
        assert d.map(dec_string, dec_u32, 8) == mapping
        assert d.bytes() == blob
    assert d.u8() == extra and d.at_end()


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_garbage_raises_only_decode_error(buf: bytes) -> None:
    d = Decoder(buf)
    try:
        with d.versioned(9, "garbage"):
            d.uuid()
            d.map(dec_string, lambda d: d.entity_addrvec(), 5)
            d.list(dec_string, 4)
            d.auth_entity_name()
    except DecodeError:
        pass


def test_decoder_window() -> None:
    d = Decoder(b"abcdef", 2, 4)
    assert d.raw(2) == b"cd" and d.at_end()
    with pytest.raises(ShortBufferError):
        d.u8()
    with pytest.raises(ShortBufferError):
        Decoder(b"ab", 0, 5)
