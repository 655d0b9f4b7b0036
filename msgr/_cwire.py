"""Hot-path packing/parsing of msgr v1 message headers, footers and OPEN-state frames.

Thin functions for ``msgr.wire``; results are identical whether ``msgr._fastpath`` is in use or
not (the backend follows ``msgr.crc.BACKEND``).  What runs where was chosen by measurement
(bench/codec.py), not by principle:

* parsing a header is ``struct.unpack_from`` plus one CRC call on the 49 bytes in place: a
  one-call C parse is slower from Python because turning a cffi ``uint64_t[14]`` back into ints
  (``ffi.unpack``) costs more than the struct unpack; and a shared preallocated out array would
  race between threads because cffi releases the GIL during the call;
* packing a header is ``struct.pack`` plus one CRC call (a C pack was slower from Python:
  cffi converts 14 arguments and the bytes must be copied out of a cffi buffer);
* footers and the old 334-byte header are plain ``struct`` (+ CRC) on both backends;
* ``scan_frames`` walks every complete small frame of a receive buffer in one C call.

Field order of a header tuple (the contract, same as the C side): seq, tid, type, priority,
version, front_len, middle_len, data_len, data_off, src_type, src_num (signed), compat_version,
reserved, crc.
"""
from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, Any

from msgr import _cext
from msgr import crc as _crc
from msgr.errors import BadCrcError, BadTagError, DecodeError, ShortBufferError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "BACKEND", "HEADER_SIZE", "HEADER_OLD_SIZE", "FOOTER_SIZE", "FOOTER_OLD_SIZE",
    "parse_header", "pack_header", "header_crc", "parse_footer", "pack_footer",
    "parse_header_old", "pack_header_old", "scan_frames", "scan", "scan_pinned", "scan_flags", "pin",
    "scan_error",
]

HEADER_SIZE = 53
HEADER_OLD_SIZE = 334
FOOTER_SIZE = 21
FOOTER_OLD_SIZE = 13

_S64_WRAP, _S64_MIN = 1 << 64, -(1 << 63)
_HDR = struct.Struct("<QQHHHIIIHBqHHI")
_HDR49 = struct.Struct("<QQHHHIIIHBQHH")        # src_num normalised to u64 before packing
_HDR_OLD = struct.Struct("<QQHHHIIIHBq136sBq136sII")
_HDR_OLD330 = struct.Struct("<QQHHHIIIHBQ136sBQ136sI")
_FTR = struct.Struct("<IIIQB")
_FTR_OLD = struct.Struct("<IIIB")
_U32 = struct.Struct("<I")
_unpack_hdr = _HDR.unpack_from
_unpack_hdr_old = _HDR_OLD.unpack_from
_unpack_ftr = _FTR.unpack_from
_unpack_ftr_old = _FTR_OLD.unpack_from
_crc32c = _crc.crc32c

BACKEND: str = _crc.BACKEND

# --- scan_frames records (see csrc/fastpath.c for the full contract) --------------------------
SCAN_SLOTS = 24
R_TAG, R_OFFSET, R_LEN, R_HEADER = 0, 1, 2, 3      # header fields are record[3:17]
R_FRONT_CRC, R_MIDDLE_CRC, R_DATA_CRC, R_SIG, R_FOOTER_FLAGS, R_FRONT_OFFSET = 17, 18, 19, 20, 21, 22
R_ACK_SEQ, R_STAMP_SEC, R_STAMP_NSEC = 3, 3, 4
SCAN_NEED_MORE, SCAN_FULL, SCAN_LARGE, SCAN_CLOSE = 0, 1, 2, 3
SCAN_BAD_TAG, SCAN_BAD_HEADER_CRC, SCAN_BAD_FRONT_CRC = -1, -2, -3
SCAN_BAD_MIDDLE_CRC, SCAN_BAD_DATA_CRC, SCAN_NOT_COMPLETE = -4, -5, -6
_SCAN_CRC_HEADER, _SCAN_CRC_DATA, _SCAN_NEW_FOOTER = 1, 2, 4
_REC = struct.Struct("<13Qq10Q")                   # slot 13 = src_num, read back signed
_REC_SIZE = _REC.size


def _short(what: str, need: int, buf: Buffer, offset: int) -> ShortBufferError:
    return ShortBufferError(what, need, max(0, memoryview(buf).nbytes - offset))


def _check_offset(offset: int) -> None:
    if offset < 0:
        raise ValueError("offset must be >= 0")


def header_crc(buf: Buffer, offset: int = 0) -> int:
    """CRC-32C (seed 0) of the 49 header bytes before the crc field."""
    _check_offset(offset)
    mv = memoryview(buf)[offset:offset + 49]
    if mv.nbytes < 49:
        raise _short("ceph_msg_header", HEADER_SIZE, buf, offset)
    return _crc32c(0, mv)


def parse_footer(buf: Buffer, offset: int = 0, new_format: bool = True) -> tuple[int, int, int, int, int]:
    """(front_crc, middle_crc, data_crc, sig, flags); an old 13-byte footer reads as sig 0."""
    _check_offset(offset)
    try:
        if new_format:
            return _unpack_ftr(buf, offset)
        fc, mc, dc, flags = _unpack_ftr_old(buf, offset)
    except struct.error:
        raise _short("ceph_msg_footer" if new_format else "ceph_msg_footer_old",
                     FOOTER_SIZE if new_format else FOOTER_OLD_SIZE, buf, offset) from None
    return fc, mc, dc, 0, flags


def pack_footer(front_crc: int, middle_crc: int, data_crc: int, sig: int, flags: int,
                new_format: bool = True) -> bytes:
    """21-byte footer (MSG_AUTH negotiated) or the old 13-byte one (``sig`` dropped)."""
    try:
        if new_format:
            return _FTR.pack(front_crc, middle_crc, data_crc, sig, flags)
        return _FTR_OLD.pack(front_crc, middle_crc, data_crc, flags)
    except struct.error as exc:
        raise OverflowError(f"footer field out of range: {exc}") from None


def parse_header_old(buf: Buffer, offset: int = 0, check_crc: bool = True) -> tuple[int | bytes, ...]:
    """334-byte pre-NOSRCADDR header: (seq, tid, type, priority, version, front_len, middle_len,
    data_len, data_off, src_type, src_num, src_addr136, orig_src_type, orig_src_num,
    orig_src_addr136, reserved, crc)."""
    _check_offset(offset)
    try:
        t = _unpack_hdr_old(buf, offset)
    except struct.error:
        raise _short("ceph_msg_header_old", HEADER_OLD_SIZE, buf, offset) from None
    if check_crc:
        actual = _crc32c(0, memoryview(buf)[offset:offset + 330])
        if actual != t[16]:
            raise BadCrcError("ceph_msg_header_old", t[16], actual)
    return t


def pack_header_old(seq: int, tid: int, type: int, priority: int, version: int, front_len: int,
                    middle_len: int, data_len: int, data_off: int, src_type: int, src_num: int,
                    src_addr: bytes, orig_src_type: int, orig_src_num: int, orig_src_addr: bytes,
                    reserved: int = 0) -> bytes:
    """334 bytes with the crc over the first 330; addresses are legacy 136-byte encodings."""
    if len(src_addr) != 136 or len(orig_src_addr) != 136:
        raise ValueError("entity addresses in the old header must be 136 bytes (legacy encoding)")
    if src_num < 0:
        src_num += _S64_WRAP if src_num >= _S64_MIN else 0   # still negative: OverflowError
    if orig_src_num < 0:
        orig_src_num += _S64_WRAP if orig_src_num >= _S64_MIN else 0
    try:
        head = _HDR_OLD330.pack(seq, tid, type, priority, version, front_len, middle_len,
                                data_len, data_off, src_type, src_num, bytes(src_addr),
                                orig_src_type, orig_src_num, bytes(orig_src_addr), reserved)
    except struct.error as exc:
        raise OverflowError(f"header field out of range: {exc}") from None
    return head + _U32.pack(_crc32c(0, head))


def _parse_header_py(buf: Buffer, offset: int = 0, check_crc: bool = True) -> tuple[int, ...]:
    """The 14 header fields (see module doc); verifies the crc unless told not to."""
    if offset < 0:
        raise ValueError("offset must be >= 0")
    try:
        t = _unpack_hdr(buf, offset)
    except struct.error:
        raise _short("ceph_msg_header", HEADER_SIZE, buf, offset) from None
    if check_crc:
        actual = _crc32c(0, memoryview(buf)[offset:offset + 49])
        if actual != t[13]:
            raise BadCrcError("ceph_msg_header", t[13], actual)
    return t


def _pack_header_py(seq: int, tid: int, type: int, priority: int, version: int, front_len: int,
                    middle_len: int, data_len: int, data_off: int, src_type: int, src_num: int,
                    compat_version: int, reserved: int = 0) -> bytes:
    """53 bytes, crc computed over the first 49.  ``src_num`` may be given signed (-1)."""
    if src_num < 0:
        src_num += _S64_WRAP if src_num >= _S64_MIN else 0   # still negative: OverflowError
    try:
        head = _HDR49.pack(seq, tid, type, priority, version, front_len, middle_len, data_len,
                           data_off, src_type, src_num, compat_version, reserved)
    except struct.error as exc:
        raise OverflowError(f"header field out of range: {exc}") from None
    return head + _U32.pack(_crc32c(0, head))


parse_header = _parse_header_py
pack_header = _pack_header_py

_U64 = struct.Struct("<Q")
_STAMP = struct.Struct("<II")
_ZERO_TAIL = (0,) * (SCAN_SLOTS - 3)


def scan_flags(crc_header: bool = True, crc_data: bool = True, new_footer: bool = True) -> int:
    """The ``flags`` argument of :func:`scan` (see :func:`scan_frames` for the switches)."""
    return ((_SCAN_CRC_HEADER if crc_header else 0) | (_SCAN_CRC_DATA if crc_data else 0)
            | (_SCAN_NEW_FOOTER if new_footer else 0))


def scan_frames(buf: Buffer, offset: int = 0, *, end: int | None = None, crc_header: bool = True,
                crc_data: bool = True, new_footer: bool = True, max_inline: int = 1 << 20,
                max_frames: int = 64) -> tuple[int, int, list[tuple[int, ...]]]:
    """Describe every complete small frame of an OPEN-state receive buffer in ``[offset, end)``
    (``end`` None: the end of ``buf``).

    Returns ``(status, end, records)``: ``records`` holds one tuple of SCAN_SLOTS ints per
    complete frame (layout: R_* constants, csrc/fastpath.c), ``end`` is where the caller
    resumes, ``status`` says why the scan stopped (SCAN_NEED_MORE, SCAN_FULL, SCAN_LARGE: a
    message at ``end`` with a body above ``max_inline``, header already checked; SCAN_CLOSE;
    negative: the frame at ``end`` is bad, ``scan_error`` builds the exception).  Records before
    the stop are valid in every case.  ``crc_header`` = ms_crc_header (header, front, middle),
    ``crc_data`` = ms_crc_data (unless the footer says NOCRC), ``new_footer`` = MSG_AUTH.
    :func:`scan` is the same with positional arguments and the switches as one ``flags`` int
    (the receive path's form: no keyword handling per call).
    """
    return scan(buf, offset, end, scan_flags(crc_header, crc_data, new_footer), max_inline, max_frames)[:3]


def _pin_py(buf: Buffer) -> Any:
    """A view of ``buf`` that :func:`scan` takes as it is (the C backend's is a cffi view made
    once per buffer); ``buf`` may not change size while the view lives."""
    return memoryview(buf).cast("B")


def _scan_py(buf: Buffer, offset: int, end: int | None, flags: int, max_inline: int,
             max_frames: int) -> tuple[int, int, list[tuple[int, ...]], int, int]:
    """The receive rules of the OPEN state for small frames, in Python (see :func:`scan_frames`);
    the C scanner (csrc/fastpath.c) must agree with it on every input (tests/test_cwire.py).

    Returns what :func:`scan_frames` does plus how many records are messages and the sum of
    their front+middle+data lengths (what the receive throttles take for the whole scan)."""
    if offset < 0 or max_frames < 1:
        raise ValueError("offset must be >= 0 and max_frames >= 1")
    crc_header, crc_data = flags & _SCAN_CRC_HEADER, flags & _SCAN_CRC_DATA
    new_footer = bool(flags & _SCAN_NEW_FOOTER)
    mv = memoryview(buf).cast("B")
    if end is not None:
        if end < 0 or end > mv.nbytes:
            raise ValueError("end must be within the buffer")
        mv = mv[:end]
    size = mv.nbytes
    flen = FOOTER_SIZE if new_footer else FOOTER_OLD_SIZE
    recs: list[tuple[int, ...]] = []
    pos, status = offset, SCAN_NEED_MORE
    while pos < size:
        if len(recs) >= max_frames:
            status = SCAN_FULL
            break
        tag, avail = mv[pos], size - pos
        if tag == 7:
            if avail < 1 + HEADER_SIZE:
                break
            h = _HDR.unpack_from(mv, pos + 1)
            if crc_header and _crc32c(0, mv[pos + 1:pos + 50]) != h[13]:
                status = SCAN_BAD_HEADER_CRC
                break
            front, middle, data = h[5], h[6], h[7]
            if front + middle + data > max_inline:
                status = SCAN_LARGE
                break
            total = 1 + HEADER_SIZE + front + middle + data + flen
            if avail < total:
                break
            f0 = pos + 1 + HEADER_SIZE
            ft = f0 + front + middle + data
            fc, mc, dc, sig, fflags = parse_footer(mv, ft, new_footer)
            if not fflags & 1:
                status = SCAN_NOT_COMPLETE
                break
            if crc_header and _crc32c(0, mv[f0:f0 + front]) != fc:
                status = SCAN_BAD_FRONT_CRC
                break
            if crc_header and _crc32c(0, mv[f0 + front:f0 + front + middle]) != mc:
                status = SCAN_BAD_MIDDLE_CRC
                break
            if crc_data and not fflags & 2 and _crc32c(0, mv[f0 + front + middle:ft]) != dc:
                status = SCAN_BAD_DATA_CRC
                break
            recs.append((7, pos, total) + h + (fc, mc, dc, sig, fflags, f0, 0))
        elif tag in (8, 14, 15):
            if avail < 9:
                break
            body = (_U64.unpack_from(mv, pos + 1) + (0,)) if tag == 8 else _STAMP.unpack_from(mv, pos + 1)
            recs.append((tag, pos, 9) + body + _ZERO_TAIL[2:])
            total = 9
        elif tag == 9:
            recs.append((9, pos, 1) + _ZERO_TAIL)
            total = 1
        elif tag == 6:
            status = SCAN_CLOSE
            break
        else:
            status = SCAN_BAD_TAG
            break
        pos += total
    msgs = [r for r in recs if r[0] == 7]
    return status, pos, recs, len(msgs), sum(r[8] + r[9] + r[10] for r in msgs)


def _scan_pinned_py(p: Any, offset: int, end: int, flags: int,
                    max_inline: int) -> tuple[int, int, list[tuple[int, ...]], int, int]:
    """:func:`scan` of a :func:`pin` view, at most SCAN_PINNED_FRAMES records (the receive path's form)."""
    return _scan_py(p, offset, end, flags, max_inline, SCAN_PINNED_FRAMES)


SCAN_PINNED_FRAMES = 64
scan = _scan_py
pin = _pin_py
scan_pinned = _scan_pinned_py

if BACKEND.startswith("c-"):
    from msgr._fastpath import ffi as _ffi
    from msgr._fastpath import lib as _lib

    _from_buffer = _ffi.from_buffer
    _new = _ffi.new
    _ffi_buffer = _ffi.buffer
    _crc_at = _lib.msgr_crc32c_at
    _c_crc = _lib.msgr_crc32c
    _unpack_49s = struct.Struct("49s").unpack_from
    _pack_hdr49 = _HDR49.pack
    _pack_u32 = _U32.pack
    _c_scan = _lib.msgr_scan_frames
    _U64ARR = _ffi.typeof("uint64_t[]")
    _unpack_rec = _REC.unpack_from
    _iter_recs = _REC.iter_unpack
    _SCRATCH_FRAMES = SCAN_PINNED_FRAMES
    _tls = threading.local()

    _unpack_res = struct.Struct("<4Q").unpack_from   # scan's result[4]: end, records, messages, bytes

    def _scan_scratch() -> tuple[Any, memoryview, Any, memoryview]:
        """This thread's result and record arrays and their views (cffi releases the GIL during
        the scan, so they cannot be shared between threads; one thread runs one scan at a time)."""
        res = _new("uint64_t[4]")
        recs = _new(_U64ARR, _SCRATCH_FRAMES * SCAN_SLOTS)
        t = _tls.scratch = (res, memoryview(_ffi_buffer(res)), recs, memoryview(_ffi_buffer(recs)))
        return t

    _PINNED = type(_from_buffer(b""))

    def pin(buf: Buffer) -> Any:  # noqa: F811
        """A view of ``buf`` that :func:`scan` takes as it is (here the cffi view, made once per
        buffer instead of once per scan); ``buf`` may not change size while the view lives."""
        return _from_buffer(buf)

    def parse_header(buf: Buffer, offset: int = 0, check_crc: bool = True) -> tuple[int, ...]:  # noqa: F811
        """The 14 header fields (see module doc); verifies the crc unless told not to."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        try:
            t = _unpack_hdr(buf, offset)
        except struct.error:
            raise _short("ceph_msg_header", HEADER_SIZE, buf, offset) from None
        if check_crc:
            # bounds were proven by unpack_from above.  bytes: crc in place; other buffers: a
            # 49-byte bytes copy via struct is cheaper than ffi.from_buffer (measured)
            if type(buf) is bytes:
                actual = _crc_at(0, buf, len(buf), offset, 49)
            else:
                actual = _c_crc(0, _unpack_49s(buf, offset)[0], 49)
            if actual != t[13]:
                raise BadCrcError("ceph_msg_header", t[13], actual)
        return t

    def pack_header(seq: int, tid: int, type: int, priority: int, version: int,  # noqa: F811
                    front_len: int, middle_len: int, data_len: int, data_off: int,
                    src_type: int, src_num: int, compat_version: int, reserved: int = 0) -> bytes:
        """53 bytes, crc computed over the first 49.  ``src_num`` may be given signed (-1)."""
        # struct + one crc call beats lib.msgr_pack_header from Python: cffi's 14 argument
        # conversions, a per-call out buffer and ffi.unpack cost more (bench/codec.py)
        if src_num < 0:
            src_num += _S64_WRAP if src_num >= _S64_MIN else 0   # still negative: OverflowError
        try:
            head = _pack_hdr49(seq, tid, type, priority, version, front_len, middle_len, data_len,
                               data_off, src_type, src_num, compat_version, reserved)
        except struct.error as exc:
            raise OverflowError(f"header field out of range: {exc}") from None
        return head + _pack_u32(_c_crc(0, head, 49))

    def scan(buf: Buffer, offset: int, end: int | None, flags: int, max_inline: int,  # noqa: F811
             max_frames: int) -> tuple[int, int, list[tuple[int, ...]], int, int]:
        """The C scanner (csrc/fastpath.c) behind :func:`scan_frames`; same results as ``_scan_py``.

        Fixed costs are paid once per thread or buffer, not per call (one message per read is a
        round trip's case): the output arrays are this thread's, and a receive buffer passed as
        its :func:`pin` view is not converted again."""
        if offset < 0 or max_frames < 1:
            raise ValueError("offset must be >= 0 and max_frames >= 1")
        t = type(buf)
        p: Any = buf if t is _PINNED or t is bytes else _from_buffer(buf)
        size = len(p)
        if end is not None:
            if end < 0 or end > size:
                raise ValueError("end must be within the buffer")
            size = end
        if max_frames <= _SCRATCH_FRAMES:
            try:
                res, rmv, recs, mv = _tls.scratch
            except AttributeError:
                res, rmv, recs, mv = _scan_scratch()
        else:   # more than the scratch holds: arrays for this call only
            res, recs = _new("uint64_t[4]"), _new(_U64ARR, max_frames * SCAN_SLOTS)
            rmv, mv = memoryview(_ffi_buffer(res)), memoryview(_ffi_buffer(recs))
        status = _c_scan(p, size, offset, flags, max_inline, recs, max_frames, res)
        end, n, nmsgs, nbytes = _unpack_res(rmv)   # one call, not four cdata subscripts
        if n == 1:
            return status, end, [_unpack_rec(mv)], nmsgs, nbytes
        if n == 2:   # a reply and the ACK behind it (lossless round trip)
            return status, end, [_unpack_rec(mv), _unpack_rec(mv, _REC_SIZE)], nmsgs, nbytes
        return status, end, list(_iter_recs(mv[:n * _REC_SIZE])) if n else [], nmsgs, nbytes

    def scan_pinned(p: Any, offset: int, end: int, flags: int,  # noqa: F811
                    max_inline: int) -> tuple[int, int, list[tuple[int, ...]], int, int]:
        """:func:`scan` of a :func:`pin` view, at most SCAN_PINNED_FRAMES records, ``0 <= offset
        <= end <= len(p)`` (the receive path's form: its caller keeps those bounds, so none of
        scan's argument checks run per read)."""
        try:
            res, rmv, recs, mv = _tls.scratch
        except AttributeError:
            res, rmv, recs, mv = _scan_scratch()
        status = _c_scan(p, end, offset, flags, max_inline, recs, SCAN_PINNED_FRAMES, res)
        end, n, nmsgs, nbytes = _unpack_res(rmv)
        if n == 1:
            return status, end, [_unpack_rec(mv)], nmsgs, nbytes
        if n == 2:
            return status, end, [_unpack_rec(mv), _unpack_rec(mv, _REC_SIZE)], nmsgs, nbytes
        return status, end, list(_iter_recs(mv[:n * _REC_SIZE])) if n else [], nmsgs, nbytes


    _hot = _cext.hotcall()
    if _hot is not None:
        # msgr._hotcall (csrc/hotcall.c): the same scanner, its records made into tuples in C; no
        # per-thread arrays, no cffi view: the receive buffer itself is the pinned form
        scan = _hot.scan            # noqa: F811
        scan_pinned = _hot.scan_pinned   # noqa: F811

        def pin(buf: Buffer) -> Any:  # noqa: F811
            """``buf`` itself when it is a bytearray or bytes (what msgr._hotcall's scan takes
            without a buffer request), else a byte view of it; ``buf`` may not change size
            while it is used as pinned."""
            return buf if type(buf) is bytearray or type(buf) is bytes else memoryview(buf).cast("B")


def scan_error(buf: Buffer, offset: int, status: int, new_footer: bool = True) -> DecodeError:
    """The typed error for a negative ``scan_frames`` status at ``offset`` (recomputes CRCs)."""
    mv = memoryview(buf)
    if status == SCAN_BAD_TAG:
        return BadTagError(f"tag {mv[offset]} is not valid in the open state")
    h = _unpack_hdr(buf, offset + 1)
    if status == SCAN_BAD_HEADER_CRC:
        return BadCrcError("ceph_msg_header", h[13], _crc32c(0, mv[offset + 1:offset + 50]))
    front = offset + 1 + HEADER_SIZE
    middle = front + h[5]
    data = middle + h[6]
    end = data + h[7]
    fc, mc, dc, _sig, _flags = parse_footer(buf, end, new_footer)
    if status == SCAN_BAD_FRONT_CRC:
        return BadCrcError("front", fc, _crc32c(0, mv[front:middle]))
    if status == SCAN_BAD_MIDDLE_CRC:
        return BadCrcError("middle", mc, _crc32c(0, mv[middle:data]))
    if status == SCAN_BAD_DATA_CRC:
        return BadCrcError("data", dc, _crc32c(0, mv[data:end]))
    if status == SCAN_NOT_COMPLETE:
        return DecodeError("message footer lacks the COMPLETE flag (sender aborted it)")
    raise ValueError(f"scan status {status} is not an error")
