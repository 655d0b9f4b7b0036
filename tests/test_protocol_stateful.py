"""Hypothesis drives 2-3 simulated endpoints (real ProtocolV1s) through sends, races and faults.

Safety (no corruption, no duplicates, order per priority, throttles within
limits, owner contract kept) is checked after every step; liveness (every
message to a live peer arrives or its loss was reported, no handshake
stuck, throttles empty) once the faults stop. A failure prints the steps
and the cluster seed; ``Cluster(seed)`` replays the same network.
MSGR_FUZZ_PROFILE=long (``make fuzz``) runs it much longer.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from msgr.sim.chaos import SCENARIOS, Cluster

LONG = os.environ.get("MSGR_FUZZ_PROFILE", "ci") == "long"
IDX = st.integers(0, 2)


class SimulatedCluster(RuleBasedStateMachine):
    cl: Cluster | None = None

    @initialize(seed=st.integers(0, 2**32 - 1), scenario=st.sampled_from(SCENARIOS), n=st.sampled_from([2, 3]),
                workers=st.sampled_from([1, 2, 3, 0]))
    def start(self, seed, scenario, n, workers):
        self.cl = Cluster(seed, scenario, n, workers=workers)
        note(f"{self.cl!r}")

    @rule(i=IDX, j=IDX, front=st.sampled_from([0, 10, 300, 5000, 70_000]),
          data=st.sampled_from([0, 0, 9000, 200_000]), prio=st.sampled_from([63, 127, 196]))
    def send(self, i, j, front, data, prio):
        self.cl.send(i, j, front, data, prio)

    @rule(i=IDX, j=IDX)
    def keepalive(self, i, j):
        self.cl.keepalive(i, j)

    @rule(i=IDX, j=IDX)
    def mark_down(self, i, j):
        self.cl.mark_down(i, j)

    @rule(i=IDX, j=IDX)
    def connect_from_both_sides(self, i, j):
        self.cl.connect_both(i, j)

    @rule(k=st.integers(0, 64))
    def reset_socket(self, k):
        self.cl.reset_socket(k)

    @rule(i=IDX, j=IDX)
    def partition(self, i, j):
        self.cl.partition(i, j)

    @rule()
    def heal(self):
        self.cl.heal()

    @rule(i=IDX)
    def restart(self, i):
        self.cl.restart(i)

    @rule(us=st.sampled_from([0, 10, 500, 5_000, 100_000, 1_000_000, 5_000_000]))
    def advance_time(self, us):
        self.cl.advance(us)

    @invariant()
    @precondition(lambda self: self.cl is not None)
    def safety(self):
        self.cl.check_safety()

    def teardown(self):
        if self.cl is not None:
            self.cl.settle()
            self.cl.check_safety()
            self.cl.check_liveness()


SimulatedCluster.TestCase.settings = settings(
    max_examples=80_000 if LONG else 100, stateful_step_count=60 if LONG else 30, deadline=None,
    derandomize=not LONG, suppress_health_check=[HealthCheck.too_slow])
TestSimulatedCluster = SimulatedCluster.TestCase
