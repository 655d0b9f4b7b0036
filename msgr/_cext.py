"""The C fast path (``msgr._fastpath``): in use only when it is there and complete.

The compiled module is built from csrc/ by msgr/_build_fastpath.py. One built from older
sources still imports but lacks what the Python side calls now (a new function of csrc/);
using it for some things and pure Python for others would hide that, and the tests of the
missing part would skip. So a module without every name in :data:`SYMBOLS` counts as not
built: the pure fallback with one warning (msgr/crc.py), or under ``MSGR_REQUIRE_CEXT=1`` an
``ImportError`` naming what it lacks. ``MSGR_NO_CEXT=1`` turns the C module off on purpose.

:func:`load` is asked once, by msgr/crc.py; every other module follows ``msgr.crc.BACKEND``
(``"c-..."`` only with a complete module here).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from msgr._fastpath import _FFI, _Lib

# Everything csrc/fastpath.h, csrc/frame_out.h and csrc/crc_job.h declare (tests/test_cext.py holds this list to
# the headers): a function or constant added there is added here too.
SYMBOLS = (
    # CRC-32C (csrc/fastpath.c)
    "msgr_crc32c", "msgr_crc32c_soft", "msgr_crc32c_zeros", "msgr_crc32c_backend", "msgr_crc32c_at",
    # a large segment's CRC on a helper thread (csrc/crc_job.c)
    "msgr_crc_job_init", "msgr_crc_job_add", "msgr_crc_job_wait",
    # header / footer structs
    "msgr_parse_header", "msgr_pack_header", "msgr_parse_header_old", "msgr_pack_header_old",
    "msgr_parse_footer", "msgr_pack_footer",
    "MSGR_HEADER_SIZE", "MSGR_HEADER_OLD_SIZE", "MSGR_FOOTER_SIZE", "MSGR_FOOTER_OLD_SIZE",
    # one message framed; the receive scanner
    "msgr_frame_msg", "msgr_scan_frames", "MSGR_SCAN_SLOTS",
    "MSGR_SCAN_CRC_HEADER", "MSGR_SCAN_CRC_DATA", "MSGR_SCAN_NEW_FOOTER",
    "MSGR_SCAN_NEED_MORE", "MSGR_SCAN_FULL", "MSGR_SCAN_LARGE", "MSGR_SCAN_CLOSE",
    "MSGR_SCAN_BAD_TAG", "MSGR_SCAN_BAD_HEADER_CRC", "MSGR_SCAN_BAD_FRONT_CRC",
    "MSGR_SCAN_BAD_MIDDLE_CRC", "MSGR_SCAN_BAD_DATA_CRC", "MSGR_SCAN_NOT_COMPLETE",
    # send side (csrc/frame_out.c)
    "msgr_frame_batch", "MSGR_FRAME_FIELDS", "msgr_frame_one",
)


class CModuleMissing(Exception):
    """msgr._fastpath cannot be used; the message says why ("is not built (...)", "is out of date: ...")."""


def load() -> tuple[_FFI, _Lib] | None:
    """``(ffi, lib)`` of a complete C module; None under ``MSGR_NO_CEXT=1``.

    Raises :class:`CModuleMissing` when the module is not built or lacks part of :data:`SYMBOLS`,
    and ``ImportError`` instead under ``MSGR_REQUIRE_CEXT=1`` (CI: a broken or stale build fails).
    """
    if os.environ.get("MSGR_NO_CEXT") == "1":
        return None
    try:
        from msgr._fastpath import ffi, lib
    except ImportError as exc:
        problem = f"is not built ({exc})"
    else:
        missing = [name for name in SYMBOLS if not hasattr(lib, name)]
        if not missing:
            return ffi, lib
        problem = (f"is out of date: built from older sources than csrc/, it lacks {', '.join(missing)} "
                   f"(`make deps` in a checkout rebuilds it)")
    if os.environ.get("MSGR_REQUIRE_CEXT") == "1":
        raise ImportError(f"MSGR_REQUIRE_CEXT=1 but the C fast path msgr._fastpath {problem}")
    raise CModuleMissing(problem)
