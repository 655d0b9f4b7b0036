"""Regression: lossless_peer sessions under ms_inject_socket_failures never get stuck reconnecting.

Before the fix, a write failing inside AsyncConnection._after() reconnected at once and READABLE was
then registered on the still-connecting socket: the peer's banner was read in STATE_CONNECTING and
dropped, and both ends of that handshake waited forever (seeds 1 and 5 stopped at a few hundred
messages). Every seed here must deliver every message once, in order, both ways.
"""
from __future__ import annotations

import threading
import time

import pytest

from lossless_util import Cluster, Tagged, check_exact, perf, wait_for
from msgr import Config, EntityName, Policy

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")
OSD = EntityName.TYPE_OSD
N = 5000


@pytest.mark.parametrize("seed", [1, 5, 9, 13])
def test_lossless_both_ways_with_socket_failures_never_sticks(seed):
    cluster = Cluster()
    try:
        cfg = dict(ms_inject_socket_failures=20, ms_max_backoff=2.0)
        a, ra = cluster.make(EntityName.osd(0), 1000, Config(ms_inject_seed=seed, **cfg), Policy.lossless_peer())
        b, rb = cluster.make(EntityName.osd(1), 2000, Config(ms_inject_seed=seed + 1, **cfg), Policy.lossless_peer())
        ca = a.connect_to(OSD, b.get_myaddr())
        cb = b.connect_to(OSD, a.get_myaddr())   # both sides connect at once: races included
        def send(c, w: int) -> None:
            # in bursts: one worker batches a whole unpaced run into a few dozen sendmsg calls,
            # too few socket operations for the injected failures to be sure to happen
            for i in range(N):
                c.send_message(Tagged(w, 0, i))
                if i % 50 == 49:
                    time.sleep(0.001)
        ts = [threading.Thread(target=send, args=(c, w)) for c, w in ((ca, 1), (cb, 2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

        def progress() -> str:
            return (f"b got {rb.n(1)}/{N}, a got {ra.n(2)}/{N}; {ca!r} {cb!r}; "
                    f"faults {perf(a)['msgr_faults']}/{perf(b)['msgr_faults']}")
        wait_for(lambda: rb.n(1) >= N and ra.n(2) >= N, timeout=60, what="all messages", detail=progress)
        check_exact(rb.ids(1), range(N), "a -> b")
        check_exact(ra.ids(2), range(N), "b -> a")
        assert perf(a)["msgr_injected_failures"] + perf(b)["msgr_injected_failures"] > 0
    finally:
        cluster.close()
