"""cffi build script for ``msgr._fastpath`` (API/out-of-line mode).

Used by setup.py (``cffi_modules=["msgr/_build_fastpath.py:ffibuilder"]``); can also be run
directly (``python msgr/_build_fastpath.py``) to build in place for development.
The declarations come from ``csrc/fastpath.h`` and, for the send side, ``csrc/frame_out.h``: the
single source of truth for the C API.
"""
from __future__ import annotations

import os

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_CSRC = os.path.join(os.path.dirname(_HERE), "csrc")

ffibuilder = FFI()
with open(os.path.join(_CSRC, "fastpath.h"), encoding="ascii") as f:
    ffibuilder.cdef(f.read())

# --- send side (csrc/frame_out.c: batch framing of a send turn); its own header and cdef block ---
with open(os.path.join(_CSRC, "frame_out.h"), encoding="ascii") as f:
    ffibuilder.cdef(f.read())
# --- end of the send-side block ---

# --- a large segment's CRC on a helper thread (csrc/crc_job.c) ---
with open(os.path.join(_CSRC, "crc_job.h"), encoding="ascii") as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "msgr._fastpath",
    '#include "fastpath.h"\n#include "frame_out.h"\n#include "crc_job.h"',
    sources=[os.path.relpath(os.path.join(_CSRC, "fastpath.c")),
             os.path.relpath(os.path.join(_CSRC, "frame_out.c")),
             os.path.relpath(os.path.join(_CSRC, "crc_job.c"))],
    include_dirs=[_CSRC],
    # -O3 lets gcc unroll the 3-stream crc loop; no -msse4.2: the SSE path is chosen at run time.
    extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(_HERE))
    ffibuilder.compile(verbose=True)
