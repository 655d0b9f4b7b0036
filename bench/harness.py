"""pymsgr benchmark harness: every figure beside baselines measured in the same run.

``python -m msgr bench`` / ``python -m bench.harness`` / ``make bench``. The default suite (about a
minute on a 2-vCPU box) runs the codec and event-engine micro-benchmarks, the loopback TCP limit,
the bare framing loop on asyncio and uvloop, the pymsgr cases at 16 B / 4 KiB / 64 KiB / 4 MiB,
round trips, keepalive2 against a real ceph-mon when one is installed, handshake rate and RSS of
1,000 idle sessions. ``--suite full`` adds sizes and parameter sweeps.

Every row carries ``loadavg_1m`` (the machine's load when it was measured). A throughput row carries,
beside its msgs/s ratio to a framing baseline, ``cpu_ratio_vs_*``: CPU per message, the baseline's over
its own. On a machine with more runnable threads than CPUs the msgs/s ratio is skewed (a process with
more threads gets a larger share of the CPUs than the one-thread baseline); the CPU ratio is not.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import os
import platform
import pstats
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from bench import baselines, cases, report

__all__ = ["main", "parse_size", "build_suite"]

_MiB = 1 << 20
DEFAULT_SIZES = (16, 4096, 65536, 4 * _MiB)
FULL_SIZES = (16, 256, 4096, 16384, 65536, _MiB, 4 * _MiB)


def parse_size(text: str) -> int:
    """``16``, ``4K``/``4KiB``, ``4M``/``4MiB`` → bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(t[:-1] if mult > 1 else t) * mult


def _window(size: int, window: int | None) -> int:
    # as the anchors measured them: 128 in flight, 16 at multi-MiB sizes (bounded memory)
    return window or (16 if size >= _MiB else 128)


Step = tuple[str, Callable[[], "dict | list[dict] | None"]]


def _suffix(p: cases.Params, defaults: cases.Params) -> str:
    parts = []
    for name, label in (("workers", "workers"), ("connections", "conns"),
                        ("processes", "procs")):
        if getattr(p, name) != getattr(defaults, name):
            parts.append(f"{label}{getattr(p, name)}")
    if not p.crc:
        parts.append("nocrc")
    if p.policy != defaults.policy:
        parts.append(p.policy)
    if p.dispatch != defaults.dispatch:
        parts.append(p.dispatch)
    if p.data_size and not p.front_size:
        parts.append("data")
    parts.extend(f"{k}{v}" for k, v in sorted(p.extra.get("config", {}).items()))
    return "".join("." + x for x in parts)


def _pymsgr_steps(args, sizes, quick: bool, dur: float) -> list[Step]:
    base = cases.Params()
    common = dict(connections=args.connections, workers=args.workers, crc=not args.no_crc,
                  policy=args.policy, processes=args.processes, duration=dur,
                  count=args.count or 10**9)
    steps: list[Step] = []

    def params(size: int, **over) -> cases.Params:
        seg = {"front_size": size, "data_size": 0} if args.segment == "front" else \
            {"front_size": 0, "data_size": size}
        return cases.Params(**{**common, **seg, "window": _window(size, args.window), **over})

    def pipe_step(p: cases.Params) -> Step:
        suffix = _suffix(p, base)
        label = f"pymsgr.pipelined{suffix}"

        def run() -> dict:
            with _logging_to_devnull(bool(p.extra.get("config", {}).get("debug_ms"))):
                row = cases.pipelined(p)
            row["case"] = label
            return row
        return f"{label} {_human(p.size)}", run

    def rtt_step(size: int, **over) -> Step:
        p = params(size, window=1, **over)

        label = "pymsgr.rtt" + _suffix(p, base)

        def run() -> dict:
            row = cases.rtt(p)
            row["case"] = label
            return row
        return f"{label} {_human(size)}", run

    for size in sizes:
        steps.append(pipe_step(params(size)))
    # the ordinary ms_dispatch path (DispatchQueue thread) beside the fast-dispatch row above
    for size in (4096, 4 * _MiB):
        if size in sizes:
            steps.append(pipe_step(params(size, dispatch="queued")))
    for size in args.rtt_sizes:
        steps.append(rtt_step(size))
        steps.append(rtt_step(size, dispatch="queued"))
    # the GIL question: 2 workers vs 1 for a small and a large size
    if args.workers == 1:
        for size in (4096, 4 * _MiB) if not quick else (4096,):
            steps.append(pipe_step(params(size, workers=2)))
    if args.suite == "full":
        # what debug_ms costs: the default rows run with it off; this one logs every message
        steps.append(pipe_step(params(4096, extra={"config": {"debug_ms": 1}})))
        for size in (4096, 4 * _MiB):
            steps.append(pipe_step(params(size, crc=False)))
            steps.append(pipe_step(params(size, connections=4)))
            steps.append(pipe_step(params(size, processes=2)))
    p0 = params(16)
    # the same raw client as against the real ceph-mon (baseline.ceph_mon.handshake)
    steps.append(("pymsgr.handshake.rawv1", lambda: cases.raw_handshakes(p0, dur)))
    steps.append(("pymsgr.handshake", lambda: cases.handshake_rate(
        cases.Params(**{**p0.__dict__, "duration": min(dur, 1.0)}))))
    n_idle = min(100, args.idle_connections) if quick else args.idle_connections
    steps.append((f"pymsgr.idle_connections x{n_idle}",
                  lambda: cases.idle_connections(p0, n=n_idle, idle_s=0.3 if quick else 2.0)))
    return steps


@contextlib.contextmanager
def _logging_to_devnull(active: bool) -> Iterator[None]:
    """For a debug_ms row: its lines are formatted and written (to /dev/null), and the msgr
    loggers are put back afterwards so the rows after it do not log."""
    if not active:
        yield
        return
    import logging

    from msgr import debug
    logger = logging.getLogger("msgr")
    level, handlers = logger.level, list(logger.handlers)
    with open(os.devnull, "w") as sink:
        logger.addHandler(logging.StreamHandler(sink))
        try:
            yield
        finally:
            logger.setLevel(level)
            logger.handlers[:] = handlers
            debug.refresh()


def _human(n: int) -> str:
    return report._size(n)


def _micro_steps(quick: bool) -> list[Step]:
    steps: list[Step] = []
    for mod, prefix in (("bench.codec", "codec"), ("bench.eventcenter", "eventcenter"),
                        ("bench.recv_path", "recv")):
        def run(mod=mod, prefix=prefix) -> list[dict]:
            try:
                m = importlib.import_module(mod)
            except ImportError as exc:
                return [{"case": f"{prefix}", "error": f"{mod} not available ({exc})"}]
            rows = m.run(quick=quick)
            for r in rows:
                parts = [prefix, r.get("metric") or r.get("case") or r.get("bench", "?")]
                if r.get("impl"):
                    parts.append(str(r["impl"]))
                r.setdefault("case", ".".join(parts))
                if not r["case"].startswith(prefix + "."):
                    r["case"] = f"{prefix}.{r['case']}"
                r.setdefault("size", None)
            return rows
        steps.append((f"{prefix} micro-benchmarks", run))
    return steps


def build_suite(args) -> list[Step]:
    """The ordered list of (label, thunk) steps for the parsed arguments."""
    quick = args.quick
    dur = args.duration or (0.15 if quick else 1.0 if args.suite == "default" else 2.0)
    sizes = args.sizes or (FULL_SIZES if args.suite == "full" else DEFAULT_SIZES)
    steps: list[Step] = [] if args.no_micro else _micro_steps(quick or args.suite == "default")
    # best of 3: the limit is a ceiling, and a neighbour's burst should not lower it
    steps.append(("baseline.loopback_tcp", lambda: max(
        (baselines.loopback_limit((128 * _MiB) if quick else (1 << 30)) for _ in range(3)),
        key=lambda r: r["mb_per_s"])))
    for loop in baselines.LOOPS:
        for size in sizes:
            steps.append((f"baseline.framed_{loop} {_human(size)}",
                          lambda loop=loop, size=size: baselines.framed_throughput(
                              loop, size, _window(size, args.window), args.count or 10**9, dur)))
        for size in args.rtt_sizes:
            steps.append((f"baseline.framed_{loop}.rtt {_human(size)}",
                          lambda loop=loop, size=size: baselines.framed_rtt(
                              loop, size, args.count or 10**9, dur)))
    why = cases.available()
    if not args.no_mon:
        steps.append(("baseline.ceph_mon.keepalive2", lambda: _mon_keepalive(dur)))
    if why is None:
        steps.append(("pymsgr.keepalive2", lambda: cases.keepalive2(cases.Params(), dur)))
        steps.extend(_pymsgr_steps(args, sizes, quick, dur if quick else max(dur, 1.5)))
    else:
        steps.append(("pymsgr", lambda: {"case": "pymsgr", "error": why}))
    return steps


def _mon_keepalive(duration: float) -> dict:
    try:
        mon = baselines.start_ceph_mon()
    except Exception as exc:  # noqa: BLE001 - a broken mon is a note, not a crash
        return {"case": "baseline.ceph_mon.keepalive2", "error": f"ceph-mon failed: {exc}"}
    if mon is None:
        return {"case": "baseline.ceph_mon.keepalive2", "error": "ceph-mon not installed"}
    try:
        time.sleep(1.0)   # let the fresh monitor finish its start-up work first
        rows = [baselines.keepalive2_row("baseline.ceph_mon.keepalive2", mon.host, mon.port, 1,
                                         duration),
                baselines.handshake_row("baseline.ceph_mon.handshake", mon.host, mon.port, 1,
                                        duration)]
        for r in rows:
            r["server"] = "ceph-mon"
        if cases.available() is None and cases.client_keepalive_supported():
            rows.append(cases.client_keepalive2("baseline.ceph_mon.keepalive2.pymsgr_client",
                                                mon.addr, 1, "ceph-mon", duration))
        return rows
    finally:
        mon.stop()


class _ThreadProfiles:
    """cProfile every thread started while active (the messenger's workers and dispatch)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def __enter__(self) -> _ThreadProfiles:
        def boot(frame, event, arg) -> None:
            sys.setprofile(None)
            pr = cProfile.Profile()
            self.profiles.append(pr)
            pr.enable()
        main = cProfile.Profile()
        self.profiles.append(main)
        threading.setprofile(boot)
        main.enable()
        return self

    def __exit__(self, *exc) -> None:
        self.profiles[0].disable()
        threading.setprofile(None)

    def dump(self, path: str, top: int = 25) -> None:
        stats = pstats.Stats(self.profiles[0])
        for pr in self.profiles[1:]:
            try:
                stats.add(pr)
            except TypeError:  # a thread that never ran Python code
                pass
        stats.dump_stats(path)
        stats.sort_stats("tottime").print_stats(top)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m msgr bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny counts (smoke test); noisy figures")
    ap.add_argument("--suite", choices=("default", "full"), default="default")
    ap.add_argument("--json", metavar="FILE", help="one JSON object per case per line")
    ap.add_argument("--plot", metavar="FILE.png", help="MB/s and latency against message size")
    ap.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                    help="message sizes, e.g. 16,4K,64K,4M")
    ap.add_argument("--rtt-sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                    default=[16], help="round-trip sizes (default 16)")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="ms_async_op_threads")
    ap.add_argument("--window", type=int, default=None, help="messages in flight per connection")
    ap.add_argument("--count", type=int, default=None, help="messages per case (cap)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per case")
    ap.add_argument("--no-crc", action="store_true", help="ms_crc_header/ms_crc_data off")
    ap.add_argument("--policy", choices=("lossless", "lossy"), default="lossless")
    ap.add_argument("--processes", type=int, choices=(1, 2), default=1)
    ap.add_argument("--segment", choices=("front", "data"), default="front",
                    help="carry the payload in the front or the data segment")
    ap.add_argument("--idle-connections", type=int, default=1000)
    ap.add_argument("--no-mon", action="store_true", help="skip the real ceph-mon baseline")
    ap.add_argument("--no-micro", action="store_true", help="skip codec/eventcenter benches")
    ap.add_argument("--verbose", action="store_true", help="tracebacks of failed steps")
    ap.add_argument("--only", metavar="PREFIX", help="run only steps whose label starts so")
    ap.add_argument("--profile", metavar="FILE.prof",
                    help="cProfile the selected steps (all threads) and print the top entries")
    return ap


def environment(args: argparse.Namespace) -> dict:
    """What a figure depends on besides the code: stored with every JSON row."""
    try:
        from msgr.crc import BACKEND as crc_backend
    except Exception as exc:  # noqa: BLE001 - the row still says why
        crc_backend = f"unavailable: {exc}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"crc_backend": crc_backend, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "commit": commit or None,
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "workers": args.workers,
            "suite": args.suite, "quick": bool(args.quick)}


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print progress (stderr) and the table (stdout). 0 unless a step crashed."""
    args = _parser().parse_args(argv)
    steps = build_suite(args)
    if args.only:
        keep = tuple(x.strip() for x in args.only.split(","))
        steps = [s for s in steps if s[0].startswith(keep)]
    rows: list[dict] = []
    crashed = 0
    t_start = time.perf_counter()
    prof = _ThreadProfiles() if args.profile else None
    for i, (label, thunk) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {label} ...", end="", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            if prof is not None:
                with prof:
                    out = thunk()
            else:
                out = thunk()
        except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
            crashed += 1
            out = {"case": label.split()[0], "error": f"{type(exc).__name__}: {exc}"}
            if args.verbose:
                traceback.print_exc(file=sys.stderr)
        if out is None:
            out = {"case": label.split()[0], "error": "not available here"}
        new = out if isinstance(out, list) else [out]
        load = os.getloadavg()[0]   # how busy the machine was meanwhile: figures under load are noisy
        for r in new:
            r.setdefault("loadavg_1m", load)
        rows.extend(new)
        print(f" {time.perf_counter() - t0:.1f}s"
              + (f"  [{new[0]['error']}]" if len(new) == 1 and new[0].get("error") else ""),
              file=sys.stderr, flush=True)
    report.add_ratios(rows)
    print(f"pymsgr bench: suite={args.suite}{' (quick)' if args.quick else ''}, "
          f"{time.perf_counter() - t_start:.0f} s; MB = 10^6 bytes of payload")
    report.print_table(rows)
    if args.json:
        env = environment(args)
        report.write_json([{**r, "env": env} for r in rows], args.json)
    if args.plot:
        err = report.plot(rows, args.plot)
        if err:
            print(f"plot skipped: {err}", file=sys.stderr)
    if prof is not None:
        prof.dump(args.profile)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
