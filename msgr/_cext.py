"""The C fast path (``msgr._fastpath``, and ``msgr._hotcall`` beside it): in use only when it is
there and complete.

The compiled module is built from csrc/ by msgr/_build_fastpath.py. One built from older
sources still imports but lacks what the Python side calls now (a new function of csrc/);
using it for some things and pure Python for others would hide that, and the tests of the
missing part would skip. So a module without every name in :data:`SYMBOLS` counts as not
built: the pure fallback with one warning (msgr/crc.py), or under ``MSGR_REQUIRE_CEXT=1`` an
``ImportError`` naming what it lacks. ``MSGR_NO_CEXT=1`` turns the C module off on purpose.

:func:`load` is asked once, by msgr/crc.py; every other module follows ``msgr.crc.BACKEND``
(``"c-..."`` only with a complete module here).

``msgr._hotcall`` (csrc/hotcall.c, a CPython C-API module) frames, scans and builds messages on
the Python objects themselves; :func:`hotcall` gives it to msgr/message.py, msgr/_cwire.py and
msgr/protocol/outq.py only together with a complete ``msgr._fastpath`` (without that everything is
pure). Not built or incomplete: those modules keep their cffi paths and one ``RuntimeWarning``
says so, or under ``MSGR_REQUIRE_CEXT=1`` it is an ``ImportError``; ``MSGR_NO_HOTCALL=1`` leaves it
out on purpose (the cffi paths alone, silently).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
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


#: what msgr._hotcall must have (a module built from older csrc/hotcall.c lacks a newer name)
HOTCALL_NAMES = ("bind", "bind_decode", "decode_record", "release_throttles", "getters", "frame_burst", "frame_one",
                 "scan", "scan_pinned", "SCAN_SLOTS", "SCAN_PINNED_FRAMES", "FRAME_FIELDS")
_hotcall: list[ModuleType | None] = []   # the answer of hotcall(), once


def hotcall() -> ModuleType | None:
    """``msgr._hotcall`` when it is built and complete and the cffi module is in use, else None
    (warned once, or an ``ImportError`` under ``MSGR_REQUIRE_CEXT=1``)."""
    if _hotcall:
        return _hotcall[0]
    from msgr import crc  # its import decided about msgr._fastpath (and raised if it had to)
    mod: ModuleType | None = None
    # MSGR_NO_HOTCALL=1: msgr._fastpath alone, on purpose (how tests run its cffi paths)
    if crc.BACKEND.startswith("c-") and os.environ.get("MSGR_NO_HOTCALL") != "1":
        try:
            from msgr import _hotcall as loaded
        except ImportError as exc:
            problem = f"is not built ({exc})"
        else:
            missing = [n for n in HOTCALL_NAMES if not hasattr(loaded, n)]
            problem = (f"is out of date: it lacks {', '.join(missing)} (`make deps` in a checkout rebuilds it)"
                       if missing else "")
            mod = None if missing else loaded
        if mod is None:
            if os.environ.get("MSGR_REQUIRE_CEXT") == "1":
                raise ImportError(f"MSGR_REQUIRE_CEXT=1 but the C fast path msgr._hotcall {problem}")
            warnings.warn(f"pymsgr: the C fast path msgr._hotcall {problem}: framing and scanning go "
                          f"through msgr._fastpath alone (slower)", RuntimeWarning, stacklevel=2)
    _hotcall.append(mod)
    return mod
