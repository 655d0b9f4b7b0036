"""Event engine benchmarks: pymsgr's EventCenter against asyncio and uvloop, same run.

(a) 100k timers scheduled and fired, (b) 100k cross-thread calls
(``dispatch_event_external`` vs ``call_soon_threadsafe``), (c) socketpair
ping-pong round trips per second with 1-byte and 4 KiB messages, all on one
loop.  The baselines run (c) twice: raw ``add_reader`` callbacks doing the
same socket calls as ours, and the Protocol/transport API; ratios are taken
against the *faster* of the two, so they never flatter us.

Run: ``python -m bench.eventcenter [--quick] [--profile]``; the harness calls ``run()``.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable

from eventcenter import EVENT_READABLE, EventCenter, Worker

try:
    import uvloop  # baseline only
except ImportError:
    uvloop = None

N_TIMERS = 100_000
N_CALLS = 100_000
TIMER_SPREAD_US = 1_000


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    f = {"asyncio": asyncio.SelectorEventLoop}
    if uvloop is not None:
        f["uvloop"] = uvloop.new_event_loop
    return f


# --- (a) timers -----------------------------------------------------------------

def _delays(n: int) -> list[int]:
    rng = random.Random(1)
    return [rng.randrange(TIMER_SPREAD_US) for _ in range(n)]


def timers_ours(n: int) -> float:
    c = EventCenter(name="bench-timers")
    try:
        count = [0]

        def cb() -> None:
            count[0] += 1

        delays = _delays(n)
        create = c.create_time_event
        process = c.process_events
        t0 = time.perf_counter()
        for d in delays:
            create(d, cb)
        while count[0] < n:
            process(None)
        return time.perf_counter() - t0
    finally:
        c.close()


def timers_asyncio(factory, n: int) -> float:
    loop = factory()
    try:
        count = [0]

        def cb() -> None:
            count[0] += 1
            if count[0] == n:
                loop.stop()

        delays = [d / 1e6 for d in _delays(n)]
        call_later = loop.call_later
        t0 = time.perf_counter()
        for d in delays:
            call_later(d, cb)
        loop.run_forever()
        return time.perf_counter() - t0
    finally:
        loop.close()


# --- (b) cross-thread calls ----------------------------------------------------------

def xthread_ours(n: int) -> float:
    w = Worker(0, name="bench-x")
    w.start()
    try:
        done = threading.Event()
        count = [0]

        def cb() -> None:
            count[0] += 1
            if count[0] == n:
                done.set()

        dispatch = w.center.dispatch_event_external
        t0 = time.perf_counter()
        for _ in range(n):
            dispatch(cb)
        done.wait()
        return time.perf_counter() - t0
    finally:
        w.close()


def xthread_asyncio(factory, n: int) -> float:
    loop = factory()
    th = threading.Thread(target=loop.run_forever)
    th.start()
    try:
        done = threading.Event()
        count = [0]

        def cb() -> None:
            count[0] += 1
            if count[0] == n:
                done.set()

        call = loop.call_soon_threadsafe
        t0 = time.perf_counter()
        for _ in range(n):
            call(cb)
        done.wait()
        return time.perf_counter() - t0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join()
        loop.close()


# --- (c) ping-pong ---------------------------------------------------------------

class _PingPong:
    """Both ends of a socketpair on one loop; ``a`` sends, ``b`` echoes, ``a`` counts."""

    def __init__(self, size: int, n: int, on_done: Callable[[], None]) -> None:
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.msg = b"x" * size
        self.size = size
        self.n = n
        self.count = 0
        self.have_a = 0
        self.have_b = 0
        self.on_done = on_done

    def start(self) -> None:
        self.a.send(self.msg)

    # echo side
    def on_b(self, *_args) -> None:
        self.have_b += len(self.b.recv(self.size - self.have_b))
        if self.have_b == self.size:
            self.have_b = 0
            self.b.sendall(self.msg)

    # counting side
    def on_a(self, *_args) -> None:
        self.have_a += len(self.a.recv(self.size - self.have_a))
        if self.have_a == self.size:
            self.have_a = 0
            self.count += 1
            if self.count == self.n:
                self.on_done()
            else:
                self.a.sendall(self.msg)

    def close(self) -> None:
        self.a.close()
        self.b.close()


def pingpong_ours(size: int, n: int) -> float:
    c = EventCenter(name="bench-pp")
    pp = _PingPong(size, n, lambda: None)
    try:
        c.create_file_event(pp.a.fileno(), EVENT_READABLE, pp.on_a)
        c.create_file_event(pp.b.fileno(), EVENT_READABLE, pp.on_b)
        process = c.process_events
        t0 = time.perf_counter()
        pp.start()
        while pp.count < n:
            process(None)
        return time.perf_counter() - t0
    finally:
        c.close()
        pp.close()


def pingpong_asyncio_readers(factory, size: int, n: int) -> float:
    loop = factory()
    pp = _PingPong(size, n, loop.stop)
    try:
        loop.add_reader(pp.a.fileno(), pp.on_a)
        loop.add_reader(pp.b.fileno(), pp.on_b)
        t0 = time.perf_counter()
        pp.start()
        loop.run_forever()
        return time.perf_counter() - t0
    finally:
        loop.remove_reader(pp.a.fileno())
        loop.remove_reader(pp.b.fileno())
        loop.close()
        pp.close()


class _Echo(asyncio.Protocol):
    def __init__(self, size: int) -> None:
        self.size, self.have, self.t = size, 0, None

    def connection_made(self, transport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.have += len(data)
        if self.have >= self.size:
            self.have -= self.size
            self.t.write(b"x" * self.size)


class _Counter(_Echo):
    def __init__(self, size: int, n: int, loop) -> None:
        super().__init__(size)
        self.n, self.count, self.loop = n, 0, loop
        self.msg = b"x" * size

    def data_received(self, data: bytes) -> None:
        self.have += len(data)
        if self.have >= self.size:
            self.have -= self.size
            self.count += 1
            if self.count == self.n:
                self.loop.stop()
            else:
                self.t.write(self.msg)


def pingpong_asyncio_protocol(factory, size: int, n: int) -> float:
    loop = factory()
    a, b = socket.socketpair()
    try:
        async def setup():
            ta, pa = await loop.create_connection(lambda: _Counter(size, n, loop), sock=a)
            tb, _ = await loop.create_connection(lambda: _Echo(size), sock=b)
            return ta, tb, pa
        ta, tb, pa = loop.run_until_complete(setup())
        t0 = time.perf_counter()
        ta.write(pa.msg)
        loop.run_forever()
        elapsed = time.perf_counter() - t0
        ta.close()
        tb.close()
        loop.run_until_complete(asyncio.sleep(0))
        return elapsed
    finally:
        loop.close()


# --- driver -------------------------------------------------------------------------------

def _rows_for(metric: str, unit: str, results: dict[str, float], ours: str = "pymsgr") -> list[dict]:
    """One row per impl; our row carries ratios to the best asyncio / uvloop variant."""
    def best(prefix: str) -> float | None:
        vals = [v for k, v in results.items() if k.startswith(prefix)]
        return max(vals) if vals else None
    rows = []
    for impl, value in results.items():
        row = {"bench": "eventcenter", "metric": metric, "impl": impl, "value": round(value), "unit": unit}
        if impl == ours:
            for base in ("asyncio", "uvloop"):
                b = best(base)
                row[f"ratio_vs_{base}"] = round(value / b, 3) if b else None
        rows.append(row)
    return rows


def _measure(n: int, impls: dict[str, Callable[[], float]], runs: int) -> dict[str, float]:
    """Rates (n / median seconds); runs are interleaved round-robin so that load drifting on
    a shared machine hits every implementation alike."""
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(runs):
        for name, fn in impls.items():
            times[name].append(fn())
    return {name: n / statistics.median(ts) for name, ts in times.items()}


def run(quick: bool = False) -> list[dict]:
    """All event engine benchmarks as result rows (rates: higher is better)."""
    runs = 1 if quick else 5
    scale = 5 if quick else 1
    loops = _loop_factories()
    rows: list[dict] = []

    n = N_TIMERS // scale
    impls = {"pymsgr": lambda: timers_ours(n)}
    impls.update({name: (lambda f=f: timers_asyncio(f, n)) for name, f in loops.items()})
    rows += _rows_for("timers_scheduled_and_fired", "timers/s", _measure(n, impls, runs))

    n = N_CALLS // scale
    impls = {"pymsgr": lambda: xthread_ours(n)}
    impls.update({name: (lambda f=f: xthread_asyncio(f, n)) for name, f in loops.items()})
    rows += _rows_for("cross_thread_calls", "calls/s", _measure(n, impls, runs))

    for size, n in ((1, 30_000 // scale), (4096, 20_000 // scale)):
        impls = {"pymsgr": lambda size=size, n=n: pingpong_ours(size, n)}
        for name, f in loops.items():
            impls[f"{name}-add_reader"] = lambda f=f, size=size, n=n: pingpong_asyncio_readers(f, size, n)
            impls[f"{name}-protocol"] = lambda f=f, size=size, n=n: pingpong_asyncio_protocol(f, size, n)
        for r in _rows_for("pingpong_round_trips", "rt/s", _measure(n, impls, runs)):
            r["size"] = size
            rows.append(r)
    return rows


def print_table(rows: list[dict]) -> None:
    print("pymsgr event engine vs asyncio / uvloop (one loop; ratios vs the faster baseline variant)")
    print(f"{'metric':28} {'impl':20} {'size':>6} {'value':>10} {'unit':9} ratios")
    for r in rows:
        ratios = "  ".join(f"{v:.2f}x {k.replace('ratio_', '')}" for k, v in r.items()
                           if k.startswith("ratio_") and v is not None)
        print(f"{r['metric']:28} {r['impl']:20} {r.get('size', '')!s:>6} {r['value']:>10} "
              f"{r['unit']:9} {ratios}")


def _profile() -> None:
    import cProfile
    import pstats
    for label, fn in (("timers", lambda: timers_ours(N_TIMERS)),
                      ("cross-thread (producer side)", lambda: xthread_ours(N_CALLS)),
                      ("ping-pong 1 B", lambda: pingpong_ours(1, 30_000))):
        print(f"--- cProfile: {label}")
        prof = cProfile.Profile()
        prof.runcall(fn)
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    ap.add_argument("--profile", action="store_true", help="cProfile our side of each benchmark")
    args = ap.parse_args(argv)
    if args.profile:
        _profile()
        return 0
    print_table(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
