"""Instructions per round trip or per message, counted by valgrind's callgrind: repeatable where
wall-clock figures are not (a shared 2-core machine moves them by tens of percent).

Each case runs twice in a child process under callgrind, for ``n`` and for ``2n`` units; the figure
is the difference over ``n``, so interpreter start-up, imports, handshakes and warm-up cancel out.
All threads are counted (callgrind serialises them), and the kernel is not: the syscalls of two
implementations being compared should be the same (``strace -f -c`` shows them).

Cases (``python -m bench.icount CASE [CASE ...] [--n N]``):

- ``rtt``: one 16 B message each way, fast dispatch (the ``pymsgr.rtt`` row);
- ``rtt-queued``: the same through ``ms_dispatch`` (the DispatchQueue thread);
- ``pipe16``, ``pipe4k``: one-way messages of 16 B / 4 KiB with 128 in flight, per message;
- ``asyncio-rtt``: the bare framed asyncio echo the ``pymsgr.rtt`` row is compared with;
- ``asyncio-pipe4k``: the bare framed asyncio stream of 4 KiB messages, per message;
- ``handshake-server``: a lossy pymsgr server alone in the counted process, per handshake of a raw
  msgr v1 client (bench/baselines.py RawV1Client, connect to READY, then close) driven from this
  process: the server's share of the ``pymsgr.handshake.rawv1`` row.

``--cache`` adds callgrind's simulated L1 misses per unit (I1mr: instruction fetch, D1mr/D1mw: data
read/write). They matter: a path that runs through many distinct functions and objects runs at a
lower IPC, so its time ratio to a baseline exceeds its instruction ratio.

Needs ``valgrind`` on PATH. Run from a checkout: the child imports this tree's ``msgr``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench import baselines, cases

CASES = ("rtt", "rtt-queued", "pipe16", "pipe4k", "asyncio-rtt", "asyncio-pipe4k", "handshake-server")
DEFAULT_N = {"rtt": 1000, "rtt-queued": 1000, "pipe16": 4000, "pipe4k": 4000,
             "asyncio-rtt": 1000, "asyncio-pipe4k": 4000, "handshake-server": 400}
_HANDSHAKE_WARMUP = 100
_FOREVER = 1e6   # seconds: the count, not a duration, ends each case


def run_case(case: str, n: int) -> int:
    """Run ``case`` for ``n`` units in this process; the units it did."""
    if case in ("rtt", "rtt-queued"):
        row = cases.rtt(cases.Params(front_size=16, count=n, duration=_FOREVER,
                                     dispatch="queued" if case == "rtt-queued" else "fast"))
    elif case in ("pipe16", "pipe4k"):
        row = cases.pipelined(cases.Params(front_size=16 if case == "pipe16" else 4096, count=n,
                                           duration=_FOREVER))
    elif case == "asyncio-rtt":
        row = baselines.framed_rtt("asyncio", 16, count=n, duration=_FOREVER)
    elif case == "asyncio-pipe4k":
        row = baselines.framed_throughput("asyncio", 4096, count=n, duration=_FOREVER)
    elif case == "handshake-server":
        raise ValueError("handshake-server runs as a server child (--serve), driven by count()")
    else:
        raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")
    assert row is not None
    return int(row["messages"])


def serve_handshakes(addr_file: str, stop_fifo: str) -> None:
    """The handshake-server child: a lossy server as the bench's, its address written to
    ``addr_file``, serving until a line arrives on the FIFO ``stop_fifo``."""
    p = cases.Params(policy="lossy", front_size=16)
    servers, addrs = cases._start_servers(p, cases._Sink(32), 1)
    try:
        with open(addr_file + ".tmp", "w") as f:
            f.write(str(addrs[0]))
        os.rename(addr_file + ".tmp", addr_file)
        with open(stop_fifo) as f:   # blocks, without polling, until the driver writes
            f.read()
    finally:
        cases._stop(servers)


def _drive_handshakes(addr_file: str, n: int, proc: subprocess.Popen) -> None:
    from msgr.entity import EntityAddr, EntityName
    deadline = time.monotonic() + 300
    while not os.path.exists(addr_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the handshake server did not start")
        time.sleep(0.05)
    with open(addr_file) as f:
        a = EntityAddr.parse(f.read())
    for _ in range(_HANDSHAKE_WARMUP + n):
        baselines.RawV1Client(a.ip, a.port, host_type=EntityName.TYPE_CLIENT,
                              peer_type=EntityName.TYPE_OSD, lossy=True).close()
    time.sleep(0.5)   # the server tears the last session down before it is stopped


def _events(case: str, n: int, workdir: str, cache: bool) -> dict[str, int]:
    """callgrind's totals of one run: {"Ir": instructions, ...} (with ``cache``, the simulated
    I1/D1 misses too: I1mr, D1mr, D1mw, ...)."""
    out = os.path.join(workdir, f"cg.{case}.{n}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *(["--cache-sim=yes"] if cache else []), sys.executable, "-m", "bench.icount"]
    if case == "handshake-server":
        addr, stop = os.path.join(workdir, f"addr.{n}"), os.path.join(workdir, f"stop.{n}")
        os.mkfifo(stop)
        proc = subprocess.Popen([*cmd, "--serve", addr, stop], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _drive_handshakes(addr, n, proc)
        finally:
            with open(stop, "w") as f:
                f.write("stop\n")
            _, err = proc.communicate(timeout=300)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, None, err)
    else:
        res = subprocess.run([*cmd, "--child", case, str(n)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    if res.returncode:
        raise RuntimeError(f"{case} x{n} under callgrind failed:\n{res.stderr[-2000:]}")
    with open(out) as f:
        text = f.read()
    names = re.search(r"^events:\s*(.+)$", text, re.M)
    values = re.search(r"^summary:\s*(.+)$", text, re.M)
    if names is None or values is None:
        raise RuntimeError(f"no events/summary lines in {out}")
    return dict(zip(names.group(1).split(), map(int, values.group(1).split()), strict=False))


def count_events(case: str, n: int | None = None, keep: str | None = None,
                 cache: bool = False) -> dict[str, float]:
    """callgrind's events per unit of ``case`` (difference of a ``2n`` and an ``n`` run, over ``n``)."""
    n = n or DEFAULT_N[case]
    workdir = keep or tempfile.mkdtemp(prefix="icount.")
    os.makedirs(workdir, exist_ok=True)
    try:
        a = _events(case, n, workdir, cache)
        b = _events(case, 2 * n, workdir, cache)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {k: (b[k] - a[k]) / n for k in a}


def count(case: str, n: int | None = None, keep: str | None = None) -> float:
    """Instructions per unit of ``case``."""
    return count_events(case, n, keep)["Ir"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.icount", description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"one or more of {', '.join(CASES)}")
    ap.add_argument("--n", type=int, default=None, help="units of the shorter run (default per case)")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR (callgrind_annotate)")
    ap.add_argument("--cache", action="store_true",
                    help="also simulated L1 misses per unit (instruction fetch, data read, data write)")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--serve", nargs=2, metavar=("ADDR_FILE", "STOP_FIFO"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve_handshakes(*args.serve)
        return 0
    if args.child:
        case, n = args.child
        done = run_case(case, int(n))
        if done < int(n):   # a pipelined case adds its closing flush message
            raise SystemExit(f"{case}: ran {done} units, not {n}")
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    for case in args.cases or ["rtt", "asyncio-rtt"]:
        if case not in CASES:
            ap.error(f"unknown case {case!r}")
        ev = count_events(case, args.n, args.keep, args.cache)
        unit = "round trip" if "rtt" in case else "handshake" if "handshake" in case else "message"
        extra = "".join(f"  {k} {ev[k] / 1000:.2f}k" for k in ("I1mr", "D1mr", "D1mw") if k in ev)
        print(f"{case:16s} {ev['Ir'] / 1000:9.1f}k instructions per {unit}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
