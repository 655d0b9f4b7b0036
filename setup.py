"""Build pymsgr's optional C fast path; the package metadata lives in pyproject.toml.

The C fast path is two modules: ``msgr._fastpath``, compiled by cffi in
API/out-of-line mode from ``msgr/_build_fastpath.py``, and ``msgr._hotcall``, a
CPython C-API module (csrc/hotcall.c, built against the running Python) for the
per-message work that reads and builds Python objects. If they cannot be built
(no compiler, no Python headers) the install still succeeds, warns, and the
Python fallback runs (see msgr/crc.py, msgr/_cext.py); ``MSGR_REQUIRE_CEXT=1``
makes such a build an error instead, and ``MSGR_NO_CEXT=1`` skips the C build on
purpose.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_NOT_BUILT = """
************************************************************************
pymsgr: the C fast path msgr._fastpath was NOT built:
    {exc}
pymsgr still works, but slower: CRC-32C falls back to the crc32c package
if it is installed, else to crcmod (pure Python without a compiler, about
13 MB/s). To fix: install a C compiler and the Python headers (e.g.
`apt-get install gcc python3-dev`) and reinstall pymsgr, or at least
`pip install crc32c`. Set MSGR_REQUIRE_CEXT=1 to make this an error.
************************************************************************
"""


class OptionalBuildExt(build_ext):
    """Build the cffi extension; a failure warns (or fails under MSGR_REQUIRE_CEXT=1)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing, headers missing, ...
            self._not_built(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._not_built(exc)

    @staticmethod
    def _not_built(exc):
        if os.environ.get("MSGR_REQUIRE_CEXT") == "1":
            raise exc
        print(_NOT_BUILT.format(exc=exc), file=sys.stderr)


_NO_C = os.environ.get("MSGR_NO_CEXT") == "1"
cffi_modules = [] if _NO_C else ["msgr/_build_fastpath.py:ffibuilder"]
# the C-API module compiles the cffi module's framing and scanning code in too (one layout, frame_layout.h)
hotcall = Extension("msgr._hotcall", sources=["csrc/hotcall.c", "csrc/fastpath.c", "csrc/frame_out.c"],
                    include_dirs=["csrc"], extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"])

setup(cffi_modules=cffi_modules, ext_modules=[] if _NO_C else [hotcall],
      cmdclass={"build_ext": OptionalBuildExt})
