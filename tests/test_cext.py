"""msgr/_cext.py: the C fast path is used only complete; a stale build is an error under
MSGR_REQUIRE_CEXT=1 (as CI runs), a warned fallback otherwise, never a quiet half of each."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from test_crc import import_msgr_in_child

from msgr import _cext

ROOT = Path(__file__).resolve().parent.parent


def _declared_in_headers() -> set[str]:
    names: set[str] = set()
    for header in ("fastpath.h", "frame_out.h", "crc_job.h"):
        text = (ROOT / "csrc" / header).read_text()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)   # comments name functions too
        text = re.sub(r"//[^\n]*", "", text)
        names |= set(re.findall(r"^#define\s+(MSGR_\w+)", text, flags=re.M))
        names |= set(re.findall(r"\b(msgr_\w+)\s*\(", text))
    return names


def test_symbols_are_what_the_headers_declare():
    """A function or constant added to csrc/*.h must be listed, or a module without it would be used."""
    assert len(set(_cext.SYMBOLS)) == len(_cext.SYMBOLS)
    assert set(_cext.SYMBOLS) == _declared_in_headers()


def test_the_type_stub_declares_every_c_function():
    stub = (ROOT / "msgr" / "_fastpath.pyi").read_text()
    functions = {n for n in _cext.SYMBOLS if n.startswith("msgr_")}
    assert functions == set(re.findall(r"def (msgr_\w+)\(", stub))


def test_required_means_the_c_fast_path_is_in_use_everywhere_or_no_import():
    """Under MSGR_REQUIRE_CEXT=1 (as .ci/run) msgr either frames, scans and checksums in C or
    does not import at all: no module falls back on its own."""
    r = import_msgr_in_child("", MSGR_REQUIRE_CEXT="1")
    if r.returncode:
        assert "ImportError: MSGR_REQUIRE_CEXT=1 but the C fast path" in r.stderr, r.stderr
    else:
        backend, _crc, wire_backend, *c_framers = r.stdout.split()   # and no warning line
        assert backend.startswith("c-") and wire_backend == backend and c_framers == ["True", "True"]


def _import_with_stale_module(**env: str) -> subprocess.CompletedProcess[str]:
    """``import msgr`` in a child whose msgr._fastpath imports but lacks msgr_frame_batch."""
    have = [n for n in _cext.SYMBOLS if n != "msgr_frame_batch"]
    return import_msgr_in_child(
        "stale = types.ModuleType('msgr._fastpath')\n"
        f"stale.ffi, stale.lib = object(), types.SimpleNamespace(**dict.fromkeys({have!r}))\n"
        "sys.modules['msgr._fastpath'] = stale", **env)


def test_a_stale_c_module_is_an_error_when_required():
    r = _import_with_stale_module(MSGR_REQUIRE_CEXT="1")
    assert r.returncode != 0, r.stdout
    assert "ImportError: MSGR_REQUIRE_CEXT=1 but the C fast path msgr._fastpath is out of date" in r.stderr, r.stderr
    assert "lacks msgr_frame_batch" in r.stderr


def test_a_stale_c_module_is_not_used_and_says_so_once():
    r = _import_with_stale_module()
    assert r.returncode == 0, r.stderr
    first, *warned = r.stdout.splitlines()
    backend, _crc, wire_backend, c_batch, c_frame = first.split()
    assert not backend.startswith("c-") and wire_backend == backend
    assert (c_batch, c_frame) == ("False", "False")   # all pure: not the old module's framer either
    assert len(warned) == 1, warned
    assert warned[0].startswith("RuntimeWarning pymsgr: the C fast path msgr._fastpath is out of date")
    assert "lacks msgr_frame_batch" in warned[0] and "make deps" in warned[0]


def test_no_cext_ignores_a_stale_module_silently():
    r = _import_with_stale_module(MSGR_NO_CEXT="1", MSGR_REQUIRE_CEXT="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["crcmod 4119623852 crcmod False False"]
