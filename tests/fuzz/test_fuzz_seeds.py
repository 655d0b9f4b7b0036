"""Seed sweep: whole random chaos runs (msgr.sim.chaos.run_seed); ci: 300 seeds, long: 10,000.

Each seed runs with 1, 2 and 3 simulated workers per messenger (msgr/sim/worker.py) and in the model
without workers (0), where the seeds recorded before workers existed replay. Every failure names its
seed and worker count; ``run_seed(seed, trace=True, workers=w)`` replays it exactly.
"""
from __future__ import annotations

import importlib.util
import itertools
import time
from pathlib import Path

from fuzzprofile import LONG, count

from msgr.sim.chaos import run_seed

N_SEEDS = 10_000 if LONG else 300
BASE = 1_000_000 if LONG else 0   # the long run explores seeds CI never tries
WORKERS = (0, 1, 2, 3)


def test_seed_sweep():
    failures: list[str] = []
    t0 = time.monotonic()
    for seed, workers in itertools.product(range(BASE, BASE + N_SEEDS), WORKERS):
        try:
            r = run_seed(seed, steps=80 if LONG else 60, workers=workers)
        except Exception as exc:  # every failure is collected with its seed, then reported together
            failures.append(f"seed={seed} workers={workers}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        count("chaos seeds")
        count("chaos messages sent", r.sent)
        count("chaos protocol faults", r.faults)
        count("chaos socket resets", r.stats["resets"])
        count("chaos partitions", r.stats["partitions"])
        count("chaos restarts", r.stats["restarts"])
        count("chaos sim events", r.stats["events"])
    count("chaos sweep seconds", int(time.monotonic() - t0))
    assert not failures, f"{len(failures)} failing seed(s):\n" + "\n".join(failures[:20])


def test_stateful_machine_long_run():
    """The hypothesis state machine of tests/test_protocol_stateful.py (long settings under make fuzz)."""
    path = Path(__file__).parents[1] / "test_protocol_stateful.py"
    spec = importlib.util.spec_from_file_location("_msgr_stateful", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t0 = time.monotonic()
    mod.TestSimulatedCluster("runTest").runTest()
    count("stateful examples", mod.TestSimulatedCluster.settings.max_examples)
    count("stateful seconds", int(time.monotonic() - t0))
