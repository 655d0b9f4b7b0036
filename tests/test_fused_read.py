"""AsyncConnection._on_readable's fused path (a read event from the receive to the written reply in
one frame) against the general one (``_handle`` -> ``_dispatch_all``, ``_after`` -> ``_write``).

The same request/reply traffic runs over real loopback sockets twice, once with the fused path
switched off (``AsyncConnection._fused = False``), and both ends must see the same messages in the
same order with the same seqs, from the same dispatch paths, with the same message counters and
running times that add up (total = receive + fast dispatch + send). Hypothesis draws the traffic:
lone requests and bursts, fast-dispatched and queued ones, small frames and bodies large enough
for the state path.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_messenger_loopback import MTest, wait_for

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy
from msgr.connection import AsyncConnection

# (count, kind): kind 0 small fast, 1 small queued (ms_dispatch), 2 large fast (state path)
_KINDS = {0: (b"x" * 8, b""), 1: (b"y" * 24, b""), 2: (b"z" * 16, b"d" * 20_000)}


class Echo(Dispatcher):
    """Logs what arrives (ident, kind, seq, path); the server side replies to each from where it
    was dispatched; the client side counts replies."""

    def __init__(self, reply: bool) -> None:
        self.reply = reply
        self.log: list[tuple[int, int, int, str]] = []
        self.lock = threading.Lock()

    def ms_can_fast_dispatch(self, msg: Any) -> bool:
        return isinstance(msg, MTest) and msg.ident % 3 != 1

    def _got(self, msg: Any, path: str) -> None:
        with self.lock:
            self.log.append((msg.ident, len(msg.front) + len(msg.data), msg.get_seq(), path))
        if self.reply:
            front, data = _KINDS[msg.ident % 3]
            msg.get_connection().send_message(MTest(msg.ident, front, data=data))

    def ms_fast_dispatch(self, msg: Any) -> None:
        self._got(msg, "fast")

    def ms_dispatch(self, msg: Any) -> bool:
        self._got(msg, "queued")
        return True


def _run(traffic: list[tuple[int, int]], fused: bool) -> dict[str, Any]:
    """Send ``traffic`` (bursts of ``count`` requests of ``kind``), each burst after the replies of
    the one before; both ends on one worker (as bench.icount rtt)."""
    old = AsyncConnection._fused
    AsyncConnection._fused = fused
    general = [0]
    dispatch_all = AsyncConnection._dispatch_all

    def counted(self: Any, msgs: Any, counted: bool = False) -> None:
        general[0] += len(msgs)
        dispatch_all(self, msgs, counted)

    AsyncConnection._dispatch_all = counted   # type: ignore[method-assign]
    made = []
    try:
        cfg = Config(ms_async_op_threads=1)
        server, client = Echo(reply=True), Echo(reply=False)
        ends = []
        for d, name, nonce in ((server, EntityName.osd(0), 3100), (client, EntityName.client(9), 3200)):
            ms = Messenger.create(name, nonce=nonce, config=cfg.copy())
            made.append(ms)
            ms.set_default_policy(Policy.lossless_peer())
            ms.add_dispatcher_tail(d)
            ends.append(ms.bind(EntityAddr.parse("v1:127.0.0.1:0")))
            ms.start()
        conn = made[1].connect_to(EntityName.TYPE_OSD, ends[0])
        ident = 0
        for count, kind in traffic:
            for _ in range(count):
                ident += 1
                ident += (kind - ident) % 3   # the next ident with ident % 3 == kind
                front, data = _KINDS[kind]
                conn.send_message(MTest(ident, front, data=data))
            wait_for(lambda want=ident: bool(client.log) and client.log[-1][0] == want, what="replies")
        # every receive throttle share given back (the fused path releases them itself)
        wait_for(lambda: all(ms.dispatch_throttle.current == 0 for ms in made), what="throttles")
        perf = [ms.perf_dump()["AsyncMessenger"] for ms in made]
        return {"server": server.log, "client": client.log, "perf": perf, "general": general[0]}
    finally:
        AsyncConnection._fused = old
        AsyncConnection._dispatch_all = dispatch_all   # type: ignore[method-assign]
        for ms in made:
            ms.shutdown()
        for ms in made:
            ms.wait()


_COUNTERS = ("msgr_recv_messages", "msgr_send_messages", "msgr_fast_dispatched", "msgr_queued_dispatched")


def _check_same(fused: dict[str, Any], general: dict[str, Any]) -> None:
    assert fused["server"] == general["server"]
    assert fused["client"] == general["client"]
    for pf, pg in zip(fused["perf"], general["perf"], strict=True):
        assert {k: pf[k] for k in _COUNTERS} == {k: pg[k] for k in _COUNTERS}
    for run in (fused, general):
        for p in run["perf"]:
            total = p["msgr_running_total_time"]
            parts = p["msgr_running_recv_time"] + p["msgr_running_fast_dispatch_time"] \
                + p["msgr_running_send_time"]
            assert total > 0
            assert (p["msgr_running_fast_dispatch_time"] > 0) == (p["msgr_fast_dispatched"] > 0)
            assert parts == pytest.approx(total, rel=1e-9, abs=1e-9)


def test_lone_fast_requests_take_the_fused_path() -> None:
    traffic = [(1, 0)] * 30
    fused, general = _run(traffic, True), _run(traffic, False)
    _check_same(fused, general)
    # a lone fast message takes the fused path; only the first request and reply may share their
    # read with the end of the handshake (its CancelTimer beside the Deliver: the general way)
    assert fused["general"] <= 2
    assert general["general"] == 60        # 30 requests and 30 replies


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2)), min_size=1, max_size=8))
def test_fused_path_matches_the_general_one(traffic: list[tuple[int, int]]) -> None:
    _check_same(_run(traffic, True), _run(traffic, False))
