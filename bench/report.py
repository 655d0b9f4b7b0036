"""Ratios to the same-run baselines, the summary table, JSON lines and the plot.

Ratio conventions (so that every ratio reads "bigger is better" except latency, as the goals do):

* throughput rows: ``ratio_vs_X = msgs_per_s / X.msgs_per_s`` at the same message size
  (``ratio_vs_loopback`` compares MB/s with the raw TCP limit, any size);
* round-trip rows: ``ratio_vs_X = p50_us / X.p50_us`` (latency: smaller is better), marked
  ``"ratio_kind": "latency"``.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import IO

__all__ = ["add_ratios", "print_table", "write_json", "plot", "goals", "REQUIRED_KEYS"]

REQUIRED_KEYS = ("case", "size", "msgs_per_s", "mb_per_s", "ratio_vs_loopback",
                 "ratio_vs_asyncio", "ratio_vs_uvloop")
_LOOPBACK = "baseline.loopback_tcp"
_FRAMED = {"asyncio": "baseline.framed_asyncio", "uvloop": "baseline.framed_uvloop"}
_MICRO = ("codec.", "eventcenter.", "recv.")


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return None
    return float(f"{a / b:.4g}")   # 4 significant digits: 16 B vs loopback is ~0.002


def _is_rtt(row: dict) -> bool:
    return row.get("kind") == "rtt" or row["case"].endswith(".rtt")


def add_ratios(rows: list[dict]) -> list[dict]:
    """Fill every row's ``ratio_vs_*`` (None where that baseline does not apply or is missing)."""
    by_case: dict[tuple[str, int | None], dict] = {(r["case"], r.get("size")): r for r in rows}
    loop = next((r for r in rows if r["case"] == _LOOPBACK), None)
    for r in rows:
        for k in REQUIRED_KEYS:
            r.setdefault(k, None)
        if r.get("error") or r.get("msgs_per_s") is None and "p50_us" not in r:
            continue
        if r["case"].startswith(_MICRO):
            continue
        if _is_rtt(r):
            r["ratio_kind"] = "latency"
            for name, base in _FRAMED.items():
                b = by_case.get((base + ".rtt", r["size"]))
                if b is not None and r["case"] != b["case"]:
                    r[f"ratio_vs_{name}"] = _ratio(r.get("p50_us"), b.get("p50_us"))
            continue
        if r.get("kind") in ("keepalive2", "handshake"):
            # against the real monitor measured by the same client
            mon = next((m for m in rows if m.get("kind") == r["kind"] and not m.get("error")
                        and m.get("server") == "ceph-mon"
                        and m.get("client") == r.get("client")), None)
            r["ratio_kind"] = "latency"
            if mon is not None and r is not mon:
                r["ratio_vs_ceph_mon"] = _ratio(r.get("p50_us"), mon.get("p50_us"))
            continue
        if loop is not None and r is not loop and r.get("mb_per_s"):
            r["ratio_vs_loopback"] = _ratio(r["mb_per_s"], loop["mb_per_s"])
        for name, base in _FRAMED.items():
            b = by_case.get((base, r["size"]))
            if b is not None and b is not r:
                r[f"ratio_vs_{name}"] = _ratio(r["msgs_per_s"], b["msgs_per_s"])
                # CPU per message, the baseline's over ours (bigger is better): the companion of the
                # msgs/s ratio that an oversubscribed machine does not skew (there a process with
                # more threads gets more of the CPUs than the one-thread baseline does)
                r[f"cpu_ratio_vs_{name}"] = _ratio(b.get("cpu_s_per_gb"), r.get("cpu_s_per_gb"))
        if r.get("dispatch", "fast") != "fast":
            # the same case through fast dispatch, measured in this run
            fast = by_case.get((r["case"].replace("." + r["dispatch"], ""), r["size"]))
            if fast is not None:
                r["ratio_vs_fast"] = _ratio(r["msgs_per_s"], fast["msgs_per_s"])
    return rows


def _fmt(v, spec: str = ".0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def print_table(rows: list[dict], out: IO[str] = sys.stdout) -> None:
    """Sections: micro-benchmarks, throughput, latency, connections; then the goals."""
    micro = [r for r in rows if r["case"].startswith(_MICRO)]
    notes = [r for r in rows if r.get("error")]
    rtt = [r for r in rows if not r.get("error") and "p50_us" in r]
    conn = [r for r in rows if not r.get("error") and r.get("kind") == "connections"]
    tput = [r for r in rows if r not in micro and r not in notes and r not in rtt
            and r not in conn]
    w = out.write
    if micro:
        w("\n== micro-benchmarks ==\n")
        for r in micro:
            extra = "  ".join(f"{k[6:] if k.startswith('ratio_') else k}={v}" for k, v in r.items()
                              if k.startswith(("ratio_", "gc_")) and v is not None)
            size = _size(r["size"]) if r.get("size") else ""
            w(f"{r['case']:56} {size:>7} {_fmt(r.get('value'), '.3f'):>12} "
              f"{r.get('unit', ''):9} {extra}\n")
    if tput:
        w("\n== throughput (one-way; ratios = msgs/s over the baseline's at that size; "
          "loopback = MB/s over raw TCP) ==\n")
        w(f"{'case':44} {'size':>8} {'msgs/s':>10} {'MB/s':>8} {'CPU s/GB':>8} "
          f"{'vs loop':>7} {'vs asyncio':>10} {'vs uvloop':>9} {'vs fast':>7} {'gen0/10k':>8}\n")
        for r in tput:
            w(f"{r['case']:44} {_size(r['size']):>8} {_fmt(r['msgs_per_s']):>10} "
              f"{_fmt(r['mb_per_s']):>8} {_fmt(r.get('cpu_s_per_gb'), '.2f'):>8} "
              f"{_fmt(r['ratio_vs_loopback'], '.2f'):>7} {_fmt(r['ratio_vs_asyncio'], '.2f'):>10} "
              f"{_fmt(r['ratio_vs_uvloop'], '.2f'):>9} {_fmt(r.get('ratio_vs_fast'), '.2f'):>7} "
              f"{_fmt(r.get('gc_gen0_per_10k'), '.1f'):>8}\n")
    if rtt:
        w("\n== round trip, one in flight (ratios = p50 over the baseline's p50: lower is better) ==\n")
        w(f"{'case':44} {'size':>8} {'p50 us':>8} {'p99 us':>8} {'p999 us':>8} {'rt/s':>8} "
          f"{'vs asyncio':>10} {'vs uvloop':>9} {'vs mon':>7} {'gen0/10k':>8}\n")
        for r in rtt:
            w(f"{r['case']:44} {_size(r['size']):>8} {_fmt(r['p50_us'], '.1f'):>8} "
              f"{_fmt(r['p99_us'], '.1f'):>8} {_fmt(r['p999_us'], '.1f'):>8} "
              f"{_fmt(r.get('msgs_per_s')):>8} {_fmt(r['ratio_vs_asyncio'], '.2f'):>10} "
              f"{_fmt(r['ratio_vs_uvloop'], '.2f'):>9} {_fmt(r.get('ratio_vs_ceph_mon'), '.2f'):>7} "
              f"{_fmt(r.get('gc_gen0_per_10k'), '.1f'):>8}\n")
    if conn:
        w("\n== connections ==\n")
        for r in conn:
            detail = "  ".join(f"{k}={_fmt(v, '.1f')}" for k, v in r.items()
                               if k not in ("case", "kind") and k not in REQUIRED_KEYS
                               and v is not None)
            w(f"{r['case']:44} {detail}\n")
    if notes:
        w("\n== not run ==\n")
        for r in notes:
            w(f"{r['case']:44} {r['error']}\n")
    g = goals(rows)
    if g:
        w("\n== goals (reported, never asserted) ==\n")
        for line in g:
            w(line + "\n")


def _find(rows: list[dict], case: str, size: int | None = None) -> dict | None:
    return next((r for r in rows if r["case"] == case and (size is None or r.get("size") == size)
                 and not r.get("error")), None)


def goals(rows: list[dict]) -> list[str]:
    """One line per goal of issue 8: the figure, the target, and whether it is met."""
    out = []

    def line(name: str, value: float | None, target: float, higher: bool) -> None:
        if value is None:
            out.append(f"  {name:58} n/a")
            return
        ok = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        out.append(f"  {name:58} {value:8.2f}  (goal {sign} {target})  {'met' if ok else 'NOT met'}")

    r = _find(rows, "pymsgr.pipelined", 4096)
    line("4 KiB pipelined msgs/s vs uvloop framed", r and r.get("ratio_vs_uvloop"), 1.0, True)
    line("4 KiB pipelined CPU per message, uvloop framed's over ours", r and r.get("cpu_ratio_vs_uvloop"),
         1.0, True)
    r, q = _find(rows, "pymsgr.pipelined", 4096), _find(rows, "pymsgr.pipelined.queued", 4096)
    line("4 KiB ms_dispatch (DispatchQueue) msgs/s vs fast dispatch",
         _ratio(q and q.get("msgs_per_s"), r and r.get("msgs_per_s")), 0.6, True)
    r = _find(rows, "pymsgr.pipelined", 4 << 20)
    line("4 MiB 1 conn CRC on MB/s vs loopback TCP", r and r.get("ratio_vs_loopback"), 0.7, True)
    r = _find(rows, "pymsgr.rtt", 16)
    line("RTT p50 16 B vs asyncio framed (latency)", r and r.get("ratio_vs_asyncio"), 1.5, False)
    r = _find(rows, "pymsgr.keepalive2.pymsgr_client") or _find(rows, "pymsgr.keepalive2")
    client = f" [{r.get('client')} client]" if r else ""
    line("keepalive2 RTT p50 vs real ceph-mon (latency)" + client,
         r and r.get("ratio_vs_ceph_mon"), 1.2, False)
    r = _find(rows, "pymsgr.handshake.rawv1")
    line("handshake (connect -> ready) p50 vs real ceph-mon [rawv1 client]",
         r and r.get("ratio_vs_ceph_mon"), 1.3, False)
    r = _find(rows, "pymsgr.idle_connections")
    line("1,000 idle lossless conns: KiB RSS each", r and r.get("rss_kib_per_conn"), 32, False)
    return out


def write_json(rows: Iterable[dict], path: str) -> None:
    """One JSON object per line per case."""
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")


def plot(rows: list[dict], path: str) -> str | None:
    """MB/s and round-trip latency against message size; returns an error text or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not available: {exc}"
    series: dict[str, list[tuple[int, float]]] = {}
    lat: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("error") or r["case"].startswith(_MICRO) or not r.get("size"):
            continue
        if "p50_us" in r and r.get("p50_us"):
            lat.setdefault(r["case"], []).append((r["size"], r["p50_us"]))
        elif r.get("mb_per_s") and r["case"] != _LOOPBACK and r.get("kind") != "connections":
            series.setdefault(r["case"], []).append((r["size"], r["mb_per_s"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, pts in series.items():
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    loop = _find(rows, _LOOPBACK)
    if loop:
        ax1.axhline(loop["mb_per_s"], color="grey", linestyle="--", label="loopback TCP limit")
    ax1.set(xscale="log", yscale="log", xlabel="message size (bytes)", ylabel="MB/s",
            title="one-way throughput")
    ax1.legend(fontsize=7)
    for name, pts in lat.items():
        pts.sort()
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", label=name)
    ax2.set(xscale="log", xlabel="message size (bytes)", ylabel="p50 round trip (us)",
            title="round-trip latency, one in flight")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
