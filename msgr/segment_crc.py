"""A large received segment's CRC-32C, summed by a C helper thread while its bytes arrive.

On one worker both ends of a large transfer share that thread, and the CRC pass over a received
segment at its footer cost it about a fifth of its time for a 4 MiB message (the pass reads the
segment once more from memory). The direct reads of protocol_v1 feed each received piece of a
segment of at least :data:`OFFLOAD_MIN` bytes to a :class:`SegmentCrc`: the pieces are queued to
one process-wide pthread (csrc/crc_job.c, no GIL) that chains them in order while the worker goes
on receiving and sending.

The footer check asks :meth:`SegmentCrc.value`, which waits for what is still queued: the same
number ``crc32c(0, segment)`` gives, checked at the same point, so a message with a bad CRC is
never dispatched and its connection faults, as before. ``None`` (the helper could not take a
piece: no thread, or a fork since) means: sum the segment at the footer, as before. Without the
C module there is no helper and :func:`segment_crc` gives None (the footer pass, as always).
"""
from __future__ import annotations

from typing import Any

from msgr.crc import BACKEND, Buffer

__all__ = ["SegmentCrc", "OFFLOAD_MIN", "segment_crc"]

#: A directly read segment at least this long has its CRC summed by the helper thread.
OFFLOAD_MIN = 1 << 20

_lib: Any = None
_ffi: Any = None
if BACKEND.startswith("c-"):   # msgr/crc.py loaded a complete C module
    from msgr._fastpath import ffi as _ffi
    from msgr._fastpath import lib as _lib


class SegmentCrc:
    """CRC-32C (seed 0) of a segment's pieces, fed in order as they arrive."""

    __slots__ = ("_job", "_pins", "_lost")

    def __init__(self) -> None:
        self._job = _ffi.new("msgr_crc_job *")
        _lib.msgr_crc_job_init(self._job)
        self._pins: list[Any] = []   # the queued pieces' buffers, alive until the helper is done
        self._lost = False

    def feed(self, piece: Buffer) -> None:
        """Add ``piece``, the next bytes of the segment (kept unchanged until :meth:`value`)."""
        p = _ffi.from_buffer(piece)
        if _lib.msgr_crc_job_add(self._job, p, len(p)):
            self._pins.append(p)
        else:
            self._lost = True

    def value(self) -> int | None:
        """The CRC of everything fed (waits for the helper), or None: sum the segment instead."""
        ok = _lib.msgr_crc_job_wait(self._job)
        self._pins.clear()
        if not ok or self._lost:
            return None
        crc: int = self._job.crc
        return crc

    def __del__(self) -> None:
        if self._pins:   # dropped mid-segment (a fault): the helper may still read those buffers
            _lib.msgr_crc_job_wait(self._job)


def segment_crc(size: int) -> SegmentCrc | None:
    """A SegmentCrc for a directly read segment of ``size`` bytes, or None (sum it at the footer)."""
    return SegmentCrc() if _lib is not None and size >= OFFLOAD_MIN else None
