"""Codec micro-benchmarks: CRC-32C throughput and header parse+verify cost, C vs pure.

Run: ``python -m bench.codec [--quick]`` or ``python bench/codec.py``; the harness calls ``run()``.
The ``crc32c`` PyPI package is a *speed* baseline measured in the same run (it computes the
standard, inverted CRC-32C, not Ceph's, so its values are never compared with ours).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

import msgr
from msgr import _cwire
from msgr import crc as msgr_crc

try:
    from msgr._fastpath import ffi, lib
except ImportError:
    ffi = lib = None

try:
    import crc32c as crc32c_pkg  # baseline only
except ImportError:
    crc32c_pkg = None


def _best_per_call(fn: Callable[[], object], quick: bool, budget: float = 0.15) -> float:
    """Best-of-N seconds per call, each round sized to about ``budget`` seconds."""
    budget = budget / 5 if quick else budget
    n, t = 1, 0.0
    while t < budget / 10:  # calibrate
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        n *= 2
    n = max(1, int(n * budget / 10 / max(t, 1e-9)))
    best = float("inf")
    for _ in range(3 if quick else 7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _fallback_cwire():
    """A copy of msgr.crc + msgr._cwire imported as if MSGR_NO_CEXT=1 (the pure backend)."""
    saved_env, saved_mod = os.environ.get("MSGR_NO_CEXT"), sys.modules["msgr.crc"]
    os.environ["MSGR_NO_CEXT"] = "1"
    try:
        mods = []
        for name, path in (("msgr.crc", msgr_crc.__file__), ("msgr._cwire", _cwire.__file__)):
            spec = importlib.util.spec_from_file_location(f"_bench_fallback_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            if name == "msgr.crc":
                sys.modules["msgr.crc"] = msgr.crc = mod
            mods.append(mod)
        return mods[1]
    finally:
        sys.modules["msgr.crc"] = msgr.crc = saved_mod
        if saved_env is None:
            os.environ.pop("MSGR_NO_CEXT")
        else:
            os.environ["MSGR_NO_CEXT"] = saved_env


def _crc_impls(data: bytes) -> dict[str, Callable[[], int]]:
    """Zero-argument callables (functools.partial: no extra Python frame) per implementation."""
    impls: dict[str, Callable[[], int]] = {}
    if msgr_crc.BACKEND.startswith("c-"):
        impls[msgr_crc.BACKEND] = partial(msgr_crc.crc32c, 0, data)   # the public API
        impls["c-soft"] = partial(lib.msgr_crc32c_soft, 0, data, len(data))
    fallback, _, _ = msgr_crc._load_crcmod()
    impls["crcmod"] = partial(fallback, 0, data)
    if crc32c_pkg is not None:
        impls["crc32c-pkg"] = partial(crc32c_pkg.crc32c, data)
    return impls


def _crc_two_threads(size: int, quick: bool) -> tuple[float, float]:
    """(1-thread, 2-thread aggregate) GB/s; the second beats the first only if the GIL is released."""
    bufs = [os.urandom(size) for _ in range(2)]
    rounds = max(1, (64 if quick else 512) * (4 << 20) // size)   # ~70 ms per thread at 30 GB/s
    f = msgr_crc.crc32c

    def work(buf: bytes) -> None:
        for _ in range(rounds):
            f(0, buf)

    rates = []
    for nthreads in (1, 2):
        best = 0.0
        for _ in range(3):
            ts = [threading.Thread(target=work, args=(bufs[i],)) for i in range(nthreads)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best = max(best, nthreads * rounds * size / (time.perf_counter() - t0) / 1e9)
        rates.append(best)
    return rates[0], rates[1]


def bench_crc(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    for size in (4096, 4 << 20):
        impls = _crc_impls(os.urandom(size))
        rates = {name: size / _best_per_call(f, quick) / 1e9 for name, f in impls.items()}
        base = rates.get("crc32c-pkg")
        for name, gbps in rates.items():
            rows.append({"bench": "codec", "metric": "crc32c_gbps", "impl": name, "size": size,
                         "value": round(gbps, 3), "unit": "GB/s",
                         "ratio_vs_crc32c_pkg": round(gbps / base, 3) if base else None})
    if msgr_crc.BACKEND.startswith("c-"):
        one, two = _crc_two_threads(4 << 20, quick)
        rows.append({"bench": "codec", "metric": "crc32c_gbps_2threads", "impl": msgr_crc.BACKEND,
                     "size": 4 << 20, "value": round(two, 3), "unit": "GB/s",
                     "ratio_vs_1thread": round(two / one, 3)})
    return rows


def bench_header(quick: bool = False) -> list[dict]:
    fb = _fallback_cwire()
    hdr = _cwire.pack_header(1, 0, 17, 127, 1, 60, 0, 0, 0, 8, -1, 1, 0)
    rbuf = bytearray(b"\x07" + hdr + bytes(100))           # as a receive buffer would hold it
    fields = (1, 0, 17, 127, 1, 60, 0, 0, 0, 8, -1, 1, 0)
    cases: dict[str, dict[str, Callable[[], object]]] = {
        "header_parse_verify_ns": {},
        "header_parse_verify_bytearray_ns": {},
        "header_pack_ns": {},
    }
    backends = {"pure(struct+crcmod)": fb}
    if _cwire.BACKEND.startswith("c-"):
        backends = {f"c({_cwire.BACKEND})": _cwire, **backends}
    for name, w in backends.items():
        cases["header_parse_verify_ns"][name] = lambda w=w: w.parse_header(hdr)
        cases["header_parse_verify_bytearray_ns"][name] = lambda w=w: w.parse_header(rbuf, 1)
        cases["header_pack_ns"][name] = lambda w=w: w.pack_header(*fields)
    if lib is not None:  # the one-call C entry point, for the record (see _cwire's docstring)
        out, parse, unpack = ffi.new("uint64_t[14]"), lib.msgr_parse_header, ffi.unpack
        cases["header_parse_verify_ns"]["c one call + ffi.unpack"] = \
            lambda: (parse(hdr, 53, 0, 1, out), unpack(out, 14))
    rows: list[dict] = []
    for metric, impls in cases.items():
        res = {name: _best_per_call(f, quick) * 1e9 for name, f in impls.items()}
        pure = res["pure(struct+crcmod)"]
        for name, ns in res.items():
            rows.append({"bench": "codec", "metric": metric, "impl": name, "value": round(ns, 1),
                         "unit": "ns/op", "ratio_vs_pure": round(pure / ns, 3)})
    # batch scanning: 32 small messages (16-byte front) per buffer
    c = msgr_crc.crc32c
    front = bytes(16)
    one = (b"\x07" + _cwire.pack_header(1, 0, 17, 127, 1, 16, 0, 0, 0, 8, -1, 1, 0) + front
           + _cwire.pack_footer(c(0, front), 0, 0, 0, 1))
    batch = bytearray(one * 32)
    res = {name: _best_per_call(lambda w=w: w.scan_frames(batch), quick) * 1e9 / 32
           for name, w in backends.items()}
    for name, ns in res.items():
        rows.append({"bench": "codec", "metric": "scan_frames_ns_per_frame", "impl": name,
                     "value": round(ns, 1), "unit": "ns/frame",
                     "ratio_vs_pure": round(res["pure(struct+crcmod)"] / ns, 3)})
    return rows


def run(quick: bool = False) -> list[dict]:
    """All codec micro-benchmarks as a list of result rows (one dict per measurement)."""
    return bench_crc(quick) + bench_header(quick)


def print_table(rows: list[dict]) -> None:
    print(f"pymsgr codec benchmarks (crc backend: {msgr_crc.BACKEND})")
    print(f"{'metric':36} {'impl':28} {'size':>8} {'value':>10} {'unit':9} ratio")
    for r in rows:
        ratio = next(((k.replace('ratio_', ''), v) for k, v in r.items()
                      if k.startswith("ratio_") and v is not None), None)
        size = r.get("size", "")
        print(f"{r['metric']:36} {r['impl']:28} {size!s:>8} {r['value']:>10} {r['unit']:9} "
              + (f"{ratio[1]:.2f}x {ratio[0]}" if ratio else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    args = ap.parse_args(argv)
    print_table(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
