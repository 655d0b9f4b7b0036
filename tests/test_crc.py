"""CRC-32C with Ceph's semantics, on every backend: C SSE4.2, C slicing-by-8, the crc32c package, crcmod."""
from __future__ import annotations

import array
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgr import crc as msgr_crc

try:
    from msgr._fastpath import ffi, lib
except ImportError:  # the C module is optional; its backends are then not testable here
    ffi = lib = None

_crcmod_crc, _crcmod_zeros, _ = msgr_crc._load_crcmod()
_PACKAGE = msgr_crc._load_crc32c_package()  # None without the crc32c wheel
NOT_BUILT_NAME = "crcmod" if _PACKAGE is None else "crc32c"  # the CRC when the C module is missing


def _c(fn):
    def crc(seed: int, data) -> int:
        p = ffi.from_buffer(data)
        return fn(seed, p, len(p))
    return crc


BACKENDS = {"crcmod": _crcmod_crc, "public": msgr_crc.crc32c}
if _PACKAGE is not None:
    BACKENDS["crc32c-package"] = _PACKAGE[0]
if lib is not None:
    BACKENDS["c-dispatch"] = _c(lib.msgr_crc32c)  # SSE4.2 where the CPU has it
    BACKENDS["c-soft"] = _c(lib.msgr_crc32c_soft)

VECTORS = [  # Ceph's src/test/common/test_crc32c.cc, plus computed check values
    (0, b"foo bar baz", 4119623852),
    (1234, b"foo bar baz", 881700046),
    (0, b"whiz bang boom", 2360230088),
    (5678, b"whiz bang boom", 3743019208),
    (0, b"\x01" * 5, 2715569182),
    (0, b"\x01" * 35, 440531800),
    (0, b"123456789", 1491335712),
    (0xFFFFFFFF, b"123456789", 486108540),
    (0, b"", 0),
    (77, b"", 77),
]

# Headers captured from real Ceph 16.2.15 traffic (docs/REAL_CEPH.md §5): the 49 bytes before
# the crc field and the crc that was on the wire.
MAUTH_HEADER49 = bytes.fromhex(
    "0100000000000000" "0000000000000000" "1100" "7f00" "0100" "3c000000" "00000000" "00000000"
    "0000" "08" "ffffffffffffffff" "0100" "0000")
AUTH_REPLY_HEADER49 = bytes.fromhex(
    "010000000000000000000000000000001200c4000100180000000000000000000000000001000000000000000001000000")


@pytest.fixture(params=sorted(BACKENDS))
def crc(request):
    return BACKENDS[request.param]


@pytest.mark.parametrize("seed,data,expected", VECTORS)
def test_ceph_vectors(crc, seed, data, expected):
    assert crc(seed, data) == expected


def test_real_headers(crc):
    assert len(MAUTH_HEADER49) == 49 and len(AUTH_REPLY_HEADER49) == 49
    assert crc(0, MAUTH_HEADER49) == 0xE2AB4B69
    assert crc(0, AUTH_REPLY_HEADER49) == 0xF8A0F371


def test_not_the_standard_crc(crc):
    # the iSCSI CRC-32C (init/xorout 0xFFFFFFFF) of the MAuth header is 0x7a593d07: not Ceph's
    assert crc(0xFFFFFFFF, MAUTH_HEADER49) ^ 0xFFFFFFFF == 0x7A593D07
    assert crc(0, MAUTH_HEADER49) != 0x7A593D07


def test_backend_name():
    if os.environ.get("MSGR_NO_CEXT") == "1":
        assert msgr_crc.BACKEND == "crcmod"
    elif lib is None:
        assert msgr_crc.BACKEND == NOT_BUILT_NAME
    else:
        assert msgr_crc.BACKEND == ("c-sse42" if lib.msgr_crc32c_backend() == 1 else "c-soft")


def test_buffer_kinds():
    data = bytes(range(256)) * 40
    want = _crcmod_crc(0, data)
    f = msgr_crc.crc32c
    assert f(0, bytearray(data)) == want
    assert f(0, memoryview(data)) == want
    assert f(0, memoryview(bytearray(b"xx" + data))[2:]) == want
    assert f(0, memoryview(data)[::2]) == _crcmod_crc(0, data[::2])  # non-contiguous: copied
    words = array.array("I", range(100))
    assert f(0, words) == _crcmod_crc(0, words.tobytes())              # nbytes, not item count


@pytest.mark.parametrize("seed", [-1, 1 << 32])
def test_seed_out_of_range(seed):
    with pytest.raises(OverflowError):
        msgr_crc.crc32c(seed, b"abc")
    with pytest.raises(OverflowError):
        _crcmod_crc(seed, b"abc")


def test_rejects_text():
    with pytest.raises(TypeError):
        msgr_crc.crc32c(0, "abc")


# lengths straddling the C code's 3 x 256 and 3 x 8192 interleave blocks and the 8-byte words
EDGE_LENGTHS = [0, 1, 7, 8, 9, 255, 767, 768, 769, 1000, 8191, 24575, 24576, 24577, 24576 + 768 + 7,
                65536, 3 * 24576 + 5]


@pytest.mark.parametrize("n", EDGE_LENGTHS)
def test_lengths_across_blocks(crc, n):
    data = random.Random(n).randbytes(n)
    assert crc(0x12345678, data) == _crcmod_crc(0x12345678, data)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 64 * 1024), skew=st.integers(0, 15), seed=st.integers(0, 0xFFFFFFFF),
       rnd=st.integers(0, 2**32))
def test_backends_agree(n, skew, seed, rnd):
    raw = random.Random(rnd).randbytes(n + skew)
    view = memoryview(raw)[skew:]          # unaligned start
    want = _crcmod_crc(seed, bytes(view))
    for name, f in BACKENDS.items():
        assert f(seed, view) == want, name


@settings(max_examples=60, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000), seed=st.integers(0, 0xFFFFFFFF))
def test_chaining(a, b, seed):
    f = msgr_crc.crc32c
    assert f(f(seed, a), b) == f(seed, a + b)


@pytest.mark.parametrize("n", [0, 1, 13, 255, 256, 257, 8191, 8192, 8193, 3 * 8192 + 300, 200000])
def test_zeros(n):
    want = _crcmod_crc(0xDEADBEEF, bytes(n))
    assert msgr_crc.crc32c_zeros(0xDEADBEEF, n) == want
    assert _crcmod_zeros(0xDEADBEEF, n) == want
    if _PACKAGE is not None:
        assert _PACKAGE[1](0xDEADBEEF, n) == want
    if lib is not None:
        assert lib.msgr_crc32c_zeros(0xDEADBEEF, n) == want


def test_zeros_negative_length():
    with pytest.raises(ValueError):
        msgr_crc.crc32c_zeros(0, -1)


def test_no_cext_env_forces_crcmod():
    code = ("import msgr.crc, msgr._cwire; print(msgr.crc.BACKEND, msgr._cwire.BACKEND,"
            " msgr.crc.crc32c(0, b'foo bar baz'))")
    env = dict(os.environ, MSGR_NO_CEXT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["crcmod", "crcmod", "4119623852"]


@pytest.mark.skipif(lib is None, reason="msgr._fastpath not built")
def test_c_backend_selected_without_env():
    env = {k: v for k, v in os.environ.items() if k != "MSGR_NO_CEXT"}
    out = subprocess.run([sys.executable, "-c", "import msgr.crc; print(msgr.crc.BACKEND)"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out in ("c-sse42", "c-soft")


# --- a missing C module: one clear warning, or an error under MSGR_REQUIRE_CEXT=1 -------------------

def import_msgr_in_child(setup: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``setup``, then ``import msgr``, in a child whose MSGR_*CEXT switches are only ``env``'s.

    Its stdout: ``<crc backend> <crc32c(0, b'foo bar baz')> <_cwire backend> <C batch framer?>
    <C framer?>`` (True/False), then one line per warning the import gave (``Category message``)."""
    code = ("import sys, types, warnings\n"
            f"{setup}\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    import msgr, msgr.crc, msgr._cwire, msgr.protocol.outq as outq\n"
            "print(msgr.crc.BACKEND, msgr.crc.crc32c(0, b'foo bar baz'), msgr._cwire.BACKEND,\n"
            "      outq._c_batch is not None, outq._c_frame is not None)\n"
            "for w in seen: print(w.category.__name__, w.message)\n")
    base = {k: v for k, v in os.environ.items() if k not in ("MSGR_NO_CEXT", "MSGR_REQUIRE_CEXT")}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)


def _import_without_c(*hide: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``import msgr`` in a child where msgr._fastpath (and ``hide``) cannot be imported."""
    return import_msgr_in_child(f"for name in {('msgr._fastpath', *hide)!r}: sys.modules[name] = None", **env)


@pytest.mark.skipif(_PACKAGE is None, reason="the crc32c wheel is not installed")
def test_missing_c_module_prefers_crc32c_package_and_warns_once():
    r = _import_without_c()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "crc32c 4119623852 crc32c False False"
    assert len(lines) == 2, lines  # exactly one warning
    assert lines[1].startswith("RuntimeWarning pymsgr: the C fast path msgr._fastpath is not built")
    assert "crc32c package" in lines[1] and "apt-get install gcc python3-dev" in lines[1]


def test_missing_c_module_falls_back_to_crcmod_and_says_how_to_fix():
    r = _import_without_c("crc32c")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "crcmod 4119623852 crcmod False False" and len(lines) == 2, lines
    assert "falls back to crcmod" in lines[1] and "pip install crc32c" in lines[1]


def test_require_cext_makes_a_missing_c_module_an_error():
    r = _import_without_c(MSGR_REQUIRE_CEXT="1")
    assert r.returncode != 0
    assert "ImportError: MSGR_REQUIRE_CEXT=1 but the C fast path msgr._fastpath is not built" in r.stderr


def test_no_cext_is_deliberate_and_silent():
    r = _import_without_c(MSGR_NO_CEXT="1", MSGR_REQUIRE_CEXT="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["crcmod 4119623852 crcmod False False"]
