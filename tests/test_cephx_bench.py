"""bench/cephx_signing.py runs (a few messages): both sessions carry them; no timing is asserted."""
from __future__ import annotations

from bench.cephx_signing import run


def test_cephx_signing_bench_runs():
    r = run(count=200, rounds=1)
    assert r["unsigned_msg_s"] > 0 and r["signed_msg_s"] > 0 and r["ratio_signed_vs_unsigned"] > 0
    # the signed session signed every message (warm-up included), the other none
    assert (r["signed_messages"], r["unsigned_run_signed"]) == (201, 0)
