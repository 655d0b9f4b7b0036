"""Smoke test of the benchmark harness: it runs, and its JSON lines are complete and sane.

No timing thresholds: speed is reported by bench/, never asserted.
"""
from __future__ import annotations

import json
import math
import sys

import pytest

from bench import baselines, cases, harness, report
from msgr import _cwire
from msgr.crc import crc32c


def _rows(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    js, png = d / "out.jsonl", d / "out.png"
    rc = harness.main(["--quick", "--no-mon", "--no-micro", "--duration", "0.05",
                       "--sizes", "16,4K,1M", "--idle-connections", "20",
                       "--json", str(js), "--plot", str(png)])
    return rc, _rows(js), png


def test_quick_run_writes_required_keys(quick_run):
    rc, rows, _png = quick_run
    assert rc == 0
    assert rows, "no JSON lines written"
    for r in rows:
        missing = [k for k in report.REQUIRED_KEYS if k not in r]
        assert not missing, f"{r['case']} lacks {missing}"


def test_baseline_rows_are_sane(quick_run):
    _rc, rows, _png = quick_run
    by = {(r["case"], r["size"]): r for r in rows}
    loop = by[("baseline.loopback_tcp", 1 << 20)]
    assert _positive(loop["mb_per_s"]) and _positive(loop["msgs_per_s"])
    for name in ("asyncio", "uvloop"):
        for size in (16, 4096, 1 << 20):
            r = by[(f"baseline.framed_{name}", size)]
            assert r["messages"] > 0
            assert _positive(r["msgs_per_s"])
            # MB/s is derived from msgs/s and the size, in 10^6 bytes
            assert r["mb_per_s"] == pytest.approx(r["msgs_per_s"] * size / 1e6, rel=1e-6)
            assert r["ratio_vs_loopback"] == pytest.approx(
                r["mb_per_s"] / loop["mb_per_s"], rel=1e-2)
        rtt = by[(f"baseline.framed_{name}.rtt", 16)]
        assert 0 < rtt["p50_us"] <= rtt["p99_us"] <= rtt["p999_us"]
    other = by[("baseline.framed_uvloop", 4096)]
    assert other["ratio_vs_asyncio"] == pytest.approx(
        other["msgs_per_s"] / by[("baseline.framed_asyncio", 4096)]["msgs_per_s"], rel=1e-2)


def test_pymsgr_rows_or_not_available_note(quick_run):
    _rc, rows, _png = quick_run
    pym = [r for r in rows if r["case"].startswith("pymsgr")]
    assert pym
    note = [r for r in pym if r["case"] == "pymsgr" and r.get("error")]
    if note:   # the messenger is not usable yet: exactly one explanatory row
        assert cases.NOT_AVAILABLE in note[0]["error"]
        return
    errors = [r for r in pym if r.get("error")]
    assert not errors, errors
    pipelined = {r["size"]: r for r in pym if r["case"] == "pymsgr.pipelined"}
    assert set(pipelined) == {16, 4096, 1 << 20}
    for size, r in pipelined.items():
        assert r["messages"] > 0 and _positive(r["msgs_per_s"])
        for k in ("ratio_vs_loopback", "ratio_vs_asyncio", "ratio_vs_uvloop"):
            assert _positive(r[k]), (size, k, r[k])
    rtt = next(r for r in pym if r["case"] == "pymsgr.rtt")
    assert 0 < rtt["p50_us"] <= rtt["p99_us"] and _positive(rtt["ratio_vs_asyncio"])
    idle = next(r for r in pym if r["case"] == "pymsgr.idle_connections")
    assert idle["connections"] == 20 and idle["rss_kib_per_conn"] is not None
    # measured in a server process of its own: a live server holds more than a bare interpreter
    assert idle["server_rss_kib"] > 10_000


def test_every_row_carries_the_environment(quick_run):
    from msgr.crc import BACKEND
    _rc, rows, _png = quick_run
    for r in rows:
        env = r["env"]
        assert env["crc_backend"] == BACKEND
        assert env["python"] == ".".join(map(str, sys.version_info[:3]))
        assert env["cpu_count"] >= 1 and env["workers"] == 1
        assert env["commit"] is None or len(env["commit"]) == 12


def test_plot_written(quick_run):
    _rc, _rows_, png = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_frames_are_msgr_v1_frames():
    """The baseline speaks the real framing: msgr._cwire's scanner accepts and checks it."""
    front = bytes(range(200))
    buf = bytearray(baselines._frame(5, front, crc32c(0, front)) * 2)
    status, end, recs = _cwire.scan_frames(buf)
    assert status == _cwire.SCAN_NEED_MORE and end == len(buf) and len(recs) == 2
    rec = recs[0]
    assert rec[_cwire.R_TAG] == 7 and rec[_cwire.R_HEADER] == 5          # seq
    assert rec[_cwire.R_FRONT_CRC] == crc32c(0, front)
    buf[60] ^= 1                                                          # corrupt the front
    assert _cwire.scan_frames(buf)[0] == _cwire.SCAN_BAD_FRONT_CRC


def test_add_ratios_on_known_figures():
    rows = [
        {"case": "baseline.loopback_tcp", "size": 1 << 20, "msgs_per_s": 4000.0, "mb_per_s": 4000.0},
        {"case": "baseline.framed_asyncio", "size": 4096, "msgs_per_s": 300e3, "mb_per_s": 1228.8},
        {"case": "baseline.framed_uvloop", "size": 4096, "msgs_per_s": 200e3, "mb_per_s": 819.2,
         "cpu_s_per_gb": 2.0},
        {"case": "baseline.framed_asyncio.rtt", "size": 16, "p50_us": 20.0, "p99_us": 30.0,
         "p999_us": 40.0, "msgs_per_s": 5e4, "mb_per_s": None},
        {"case": "pymsgr.pipelined", "size": 4096, "msgs_per_s": 100e3, "mb_per_s": 409.6,
         "cpu_s_per_gb": 4.0},
        {"case": "pymsgr.rtt", "size": 16, "kind": "rtt", "p50_us": 50.0, "p99_us": 60.0,
         "p999_us": 70.0, "msgs_per_s": 2e4, "mb_per_s": None},
        {"case": "baseline.ceph_mon.keepalive2", "size": 9, "kind": "keepalive2",
         "client": "rawv1", "server": "ceph-mon", "p50_us": 40.0, "msgs_per_s": 1.0},
        {"case": "pymsgr.keepalive2", "size": 9, "kind": "keepalive2", "client": "rawv1",
         "server": "pymsgr", "p50_us": 60.0, "msgs_per_s": 1.0},
        {"case": "pymsgr", "error": "pymsgr messenger not available yet"},
    ]
    report.add_ratios(rows)
    p = rows[4]
    assert p["ratio_vs_asyncio"] == pytest.approx(1 / 3, abs=1e-3)
    assert p["ratio_vs_uvloop"] == pytest.approx(0.5)
    assert p["cpu_ratio_vs_uvloop"] == pytest.approx(0.5)   # uvloop 2 CPU s/GB, this 4
    assert p["ratio_vs_loopback"] == pytest.approx(0.1024)
    assert rows[5]["ratio_vs_asyncio"] == pytest.approx(2.5)
    assert rows[5]["ratio_vs_uvloop"] is None            # no uvloop RTT row given
    assert rows[7]["ratio_vs_ceph_mon"] == pytest.approx(1.5)
    assert rows[8]["ratio_vs_loopback"] is None
    lines = report.goals(rows)
    assert any("4 KiB" in ln and "NOT met" in ln for ln in lines)
    assert any("CPU per message" in ln and "0.50" in ln for ln in lines)
    assert any("keepalive2" in ln and "NOT met" in ln for ln in lines)


def test_missing_sub_benchmark_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "bench.eventcenter", None)   # import now fails
    steps = dict(harness._micro_steps(quick=True))
    rows = steps["eventcenter micro-benchmarks"]()
    assert rows[0]["case"] == "eventcenter" and "not available" in rows[0]["error"]


@pytest.mark.parametrize("text,n", [("16", 16), ("4K", 4096), ("4KiB", 4096), ("64k", 65536),
                                    ("4M", 4 << 20), ("1MiB", 1 << 20)])
def test_parse_size(text, n):
    assert harness.parse_size(text) == n


def test_percentiles():
    samples = [i / 1e6 for i in range(1, 1001)]      # 1..1000 us
    p = baselines.percentiles(samples)
    assert p["p50_us"] == pytest.approx(501) and p["p99_us"] == pytest.approx(991)
    assert p["p999_us"] == pytest.approx(1000)


@pytest.mark.parametrize("case", ["rtt", "pipe16", "asyncio-rtt"])
def test_icount_cases_run_their_count(case):
    """bench.icount's child runs each case for exactly the units asked (a pipelined case adds its
    closing flush), so the difference of two callgrind runs is per unit."""
    from bench import icount
    done = icount.run_case(case, 50)
    assert 50 <= done <= 51


def test_icount_rejects_an_unknown_case():
    from bench import icount
    with pytest.raises(ValueError, match="unknown case"):
        icount.run_case("nope", 1)
