"""CRC-32C exactly as Ceph computes it (``ceph_crc32c``).

The register starts at the caller's seed and the result is not inverted, so
``crc32c(0, b"foo bar baz") == 4119623852`` and chaining works:
``crc32c(crc32c(0, a), b) == crc32c(0, a + b)``.  The standard (iSCSI) CRC-32C of
``b`` is ``crc32c(0xFFFFFFFF, b) ^ 0xFFFFFFFF``.

Backends, chosen once at import:

* ``"c-sse42"`` / ``"c-soft"``: ``msgr._fastpath`` (SSE4.2 instruction or slicing-by-8 tables,
  picked by the C code from cpuid).  The call runs without the GIL.
* ``"crcmod"``: the pure fallback, used when the C module is missing or ``MSGR_NO_CEXT=1``.
"""
from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["crc32c", "crc32c_zeros", "BACKEND"]

Buffer = bytes | bytearray | memoryview

_ZERO_CHUNK = 1 << 16


def _load_c() -> tuple[Callable[[int, Buffer], int], Callable[[int, int], int], str] | None:
    if os.environ.get("MSGR_NO_CEXT") == "1":
        return None
    try:
        from msgr._fastpath import ffi, lib
    except ImportError:
        return None
    c_crc = lib.msgr_crc32c
    from_buffer = ffi.from_buffer

    def crc32c(crc: int, data: Buffer) -> int:
        """Ceph's ceph_crc32c(crc, data, len(data)) (seed used as-is, no inversion)."""
        # bytes go straight to the `const char *` parameter (no copy, no wrapper object)
        if type(data) is bytes:
            return c_crc(crc, data, len(data))
        try:
            p = from_buffer(data)
        except BufferError:  # non-contiguous view: copy once
            p = memoryview(data).tobytes()
        return c_crc(crc, p, len(p))

    def crc32c_zeros(crc: int, length: int) -> int:
        """Ceph's ceph_crc32c(crc, NULL, length): the CRC of ``length`` zero bytes."""
        if length < 0:
            raise ValueError("length must be >= 0")
        return lib.msgr_crc32c_zeros(crc, length)

    return crc32c, crc32c_zeros, "c-sse42" if lib.msgr_crc32c_backend() else "c-soft"


def _load_crcmod() -> tuple[Callable[[int, Buffer], int], Callable[[int, int], int], str]:
    import crcmod

    # rev=True with initCrc/xorOut 0: the raw reflected register update, seed passed per call
    fun: Callable[[Buffer, int], int] = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, rev=True, xorOut=0)
    zeros = bytes(_ZERO_CHUNK)

    def crc32c(crc: int, data: Buffer) -> int:
        """Ceph's ceph_crc32c(crc, data, len(data)) (seed used as-is, no inversion)."""
        if not 0 <= crc <= 0xFFFFFFFF:
            raise OverflowError("crc seed must fit in 32 bits")
        try:
            return fun(data, crc)
        except BufferError:  # non-contiguous view: copy once
            return fun(memoryview(data).tobytes(), crc)

    def crc32c_zeros(crc: int, length: int) -> int:
        """Ceph's ceph_crc32c(crc, NULL, length): the CRC of ``length`` zero bytes."""
        if length < 0:
            raise ValueError("length must be >= 0")
        while length >= _ZERO_CHUNK:
            crc = fun(zeros, crc)
            length -= _ZERO_CHUNK
        return fun(zeros[:length], crc)

    return crc32c, crc32c_zeros, "crcmod"


crc32c, crc32c_zeros, BACKEND = _load_c() or _load_crcmod()
