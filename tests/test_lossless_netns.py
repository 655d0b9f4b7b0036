"""Lossless delivery between two namespaces (two "hosts") across three link partitions of 1-3 s.

One messenger per namespace, each in a child process (tests/netns_child.py): osd.0 in ``a`` sends
10,000 MSeq messages to osd.1 in ``b`` on Policy.lossless_peer. While it sends, the test takes the
veth link down three times for 1-3 s:
  1. link a down: TCP alone rides it out (retransmission after the link comes back);
  2. link b down and b's sockets aborted (``ss -K``): the receiver faults, its RST is lost; after
     the heal the sender's retransmission meets a closed port and the sender reconnects;
  3. link a down and a's sockets aborted: the sender faults at once and tries to reconnect over a
     dead link (failing, backing off) until the link is back.
So healing goes through real lossless reconnects (connect_seq + 1, requeue, discard of what the
peer already has), not only through TCP retransmission.
The receiver reports every id it dispatched: each must appear exactly once, in order.
"""
from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from msgr.testing.netns import NetnsPair, cleanup_stale, require_netns

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CHILD = str(Path(__file__).resolve().parent / "netns_child.py")
COUNT = 10_000
DEADLINE_S = 55.0
CONFIG = {"ms_initial_backoff": 0.1, "ms_max_backoff": 1.0}


class Child:
    """A child's JSON stdout lines, followed from a thread; stderr goes to a file for the failure text."""

    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self.proc, self.name = proc, name
        self.q: queue.Queue = queue.Queue()
        self.last: dict[str, object] = {}
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            obj = json.loads(line)
            self.last.update(obj)
            self.q.put(obj)
        self.q.put(None)

    def wait_for(self, key: str, deadline: float, at_least: int | None = None) -> dict:
        """Next line holding ``key`` (with value >= at_least if given); fail at the deadline."""
        while True:
            value = self.last.get(key)
            if at_least is not None and isinstance(value, int) and value >= at_least:
                return {key: value}
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {key!r}" + (f" >= {at_least}" if at_least else "")
                                     + f" before the deadline; last lines: {self.last}")
            try:
                obj = self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if obj is None:
                raise AssertionError(f"{self.name} exited ({self.proc.wait()}) waiting for {key!r}")
            if "unexpected" in obj:
                raise AssertionError(f"{self.name}: {obj}")
            if key in obj and at_least is None:
                return obj

    def finish(self, deadline: float) -> dict:
        """Close stdin (the child's cue to report and shut down); return its final line."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        key = "ids" if self.name == "receiver" else "perf"
        return self.wait_for(key, deadline)


def test_ten_thousand_lossless_messages_across_three_partitions(tmp_path: Path) -> None:
    require_netns()
    cleanup_stale()
    rng = random.Random(5)
    partitions = [(side, kill, rng.uniform(1.0, 3.0)) for side, kill in (("a", False), ("b", True), ("a", True))]
    start = time.monotonic()
    deadline = start + DEADLINE_S
    with NetnsPair() as pair:
        cfg = json.dumps(CONFIG)
        recv = Child(pair.python("b", CHILD, "msgr-recv", pair.addr_b, "0", "--count", str(COUNT),
                                 "--report", "100", "--config", cfg,
                                 stderr=open(tmp_path / "recv.err", "w")), "receiver")
        peer = recv.wait_for("ready", deadline)["ready"]
        send = Child(pair.python("a", CHILD, "msgr-send", pair.addr_a, "0", "--peer", str(peer),
                                 "--count", str(COUNT), "--batch", "10", "--interval", "0.01",
                                 "--report", "100", "--config", cfg,
                                 stderr=open(tmp_path / "send.err", "w")), "sender")
        done_partitions = []
        received_at_heal = 0
        for k, (side, kill, seconds) in enumerate(partitions):
            # each partition starts once the sender is further along and traffic flows again
            send.wait_for("sent", deadline, at_least=(k + 1) * COUNT // 4)
            recv.wait_for("received", deadline, at_least=received_at_heal + 100)
            with pair.partition(side):
                killed = pair.kill_tcp(side) if kill else 0
                time.sleep(seconds)
            received_at_heal = int(recv.last.get("received", 0))   # type: ignore[arg-type]
            done_partitions.append((side, killed, round(seconds, 2), received_at_heal))
        send.wait_for("queued_all", deadline)
        try:
            recv.wait_for("complete", deadline)
        finally:
            final = recv.finish(time.monotonic() + 10)
            sender_perf = send.finish(time.monotonic() + 10).get("perf", {})
            errs = {n: (tmp_path / f"{n}.err").read_text()[-2000:] for n in ("recv", "send")}
            print(f"partitions (side, sockets killed, s, received at heal): {done_partitions}",
                  file=sys.stderr)
            print(f"sender perf: {json.dumps(sender_perf)[:1500]}", file=sys.stderr)
            print(f"child stderr tails: {errs}", file=sys.stderr)
        ids = final["ids"]
        assert len(ids) == len(set(ids)), "a message was delivered twice"
        assert ids == list(range(COUNT)), "messages lost or out of order"
        # the aborts really happened and the sender really reconnected (else this tests only TCP)
        assert all(killed == 1 for _, killed, _, _ in done_partitions[1:]), done_partitions
        assert sender_perf["AsyncMessenger"]["msgr_reconnects"] >= 2
    assert time.monotonic() - start < DEADLINE_S + 20
