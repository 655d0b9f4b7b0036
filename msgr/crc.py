"""CRC-32C exactly as Ceph computes it (``ceph_crc32c``).

The register starts at the caller's seed and the result is not inverted, so
``crc32c(0, b"foo bar baz") == 4119623852`` and chaining works:
``crc32c(crc32c(0, a), b) == crc32c(0, a + b)``.  The standard (iSCSI) CRC-32C of
``b`` is ``crc32c(0xFFFFFFFF, b) ^ 0xFFFFFFFF``.

Backends, chosen once at import:

* ``"c-sse42"`` / ``"c-soft"``: ``msgr._fastpath`` (SSE4.2 instruction or slicing-by-8 tables,
  picked by the C code from cpuid).  The call runs without the GIL.
* ``"crc32c"``: when the C module is not built, the ``crc32c`` wheel if it is installed (its
  own hardware/software C code).
* ``"crcmod"``: the pure fallback: with ``MSGR_NO_CEXT=1`` (no C code at all, on purpose), or
  when neither C module is there. crcmod ships no wheel, so without a compiler it is pure
  Python (about 13 MB/s).

A C module that is not built, or built from older sources than csrc/ (msgr/_cext.py decides),
is reported once at import with a ``RuntimeWarning`` naming the CRC in use and how to fix it,
unless ``MSGR_NO_CEXT=1`` asked for no C; with ``MSGR_REQUIRE_CEXT=1`` it is an ``ImportError``
instead (CI sets it so a broken or stale C build cannot pass unnoticed).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

from msgr import _cext

__all__ = ["crc32c", "crc32c_zeros", "BACKEND"]

Buffer = bytes | bytearray | memoryview
Backend = tuple[Callable[[int, Buffer], int], Callable[[int, int], int], str]

_ZERO_CHUNK = 1 << 16


def _load_c() -> Backend | None:
    """The C backend; None when ``MSGR_NO_CEXT=1``; raises CModuleMissing when it is not built
    or incomplete (ImportError under ``MSGR_REQUIRE_CEXT=1``): msgr/_cext.py decides."""
    loaded = _cext.load()
    if loaded is None:
        return None
    ffi, lib = loaded
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


def _zeros_by_chunks(crc32c: Callable[[int, Buffer], int]) -> Callable[[int, int], int]:
    zeros = bytes(_ZERO_CHUNK)

    def crc32c_zeros(crc: int, length: int) -> int:
        """Ceph's ceph_crc32c(crc, NULL, length): the CRC of ``length`` zero bytes."""
        if length < 0:
            raise ValueError("length must be >= 0")
        while length >= _ZERO_CHUNK:
            crc = crc32c(crc, zeros)
            length -= _ZERO_CHUNK
        return crc32c(crc, zeros[:length])

    return crc32c_zeros


def _load_crc32c_package() -> Backend | None:
    """The ``crc32c`` wheel, if installed: standard CRC-32C, converted to Ceph's convention."""
    try:
        import crc32c as package
    except ImportError:
        return None
    fun = package.crc32c

    def crc32c(crc: int, data: Buffer) -> int:
        """Ceph's ceph_crc32c(crc, data, len(data)) (seed used as-is, no inversion)."""
        if not 0 <= crc <= 0xFFFFFFFF:
            raise OverflowError("crc seed must fit in 32 bits")
        # the package inverts on the way in and out (iSCSI convention); Ceph does neither
        try:
            return fun(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
        except BufferError:  # non-contiguous view: copy once
            return fun(memoryview(data).tobytes(), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    return crc32c, _zeros_by_chunks(crc32c), "crc32c"


def _load_crcmod() -> Backend:
    import crcmod

    # rev=True with initCrc/xorOut 0: the raw reflected register update, seed passed per call
    fun: Callable[[Buffer, int], int] = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, rev=True, xorOut=0)

    def crc32c(crc: int, data: Buffer) -> int:
        """Ceph's ceph_crc32c(crc, data, len(data)) (seed used as-is, no inversion)."""
        if not 0 <= crc <= 0xFFFFFFFF:
            raise OverflowError("crc seed must fit in 32 bits")
        try:
            return fun(data, crc)
        except BufferError:  # non-contiguous view: copy once
            return fun(memoryview(data).tobytes(), crc)

    return crc32c, _zeros_by_chunks(crc32c), "crcmod"


def _load_fallback() -> Backend:
    return _load_crc32c_package() or _load_crcmod()


def _crcmod_is_compiled() -> bool:
    try:
        import crcmod._crcfunext  # noqa: F401  (crcmod's optional C extension)
    except ImportError:
        return False
    return True


def _missing_c_message(problem: str, backend: str) -> str:
    if backend == "crc32c":
        crc = "CRC-32C uses the crc32c package (fast)"
        extra = ""
    else:
        speed = "C code" if _crcmod_is_compiled() else "pure Python, about 13 MB/s"
        crc = f"CRC-32C falls back to crcmod ({speed})"
        extra = ", or `pip install crc32c` for a fast CRC without rebuilding"
    return (f"pymsgr: the C fast path msgr._fastpath {problem}: {crc} and frames are "
            f"packed and checked in Python. To fix, install a C compiler and the Python headers "
            f"(e.g. `apt-get install gcc python3-dev`) and reinstall pymsgr{extra}. "
            f"MSGR_NO_CEXT=1 selects the pure fallback on purpose and silences this warning.")


def _load() -> Backend:
    try:
        return _load_c() or _load_crcmod()
    except _cext.CModuleMissing as exc:
        backend = _load_fallback()
        warnings.warn(_missing_c_message(str(exc), backend[2]), RuntimeWarning, stacklevel=3)
        return backend


crc32c, crc32c_zeros, BACKEND = _load()
