"""A lossy client's connecting session whose worker runs late, replaced meanwhile (issue 11).

test_race[lossy_client-stateless_server-3w-nodelay-simultaneous] once judged the client's first
messages "lost without an ms_handle_reset", with the client's connection CONNECTING and no socket.
The interleaving: ``connect_to`` starts the protocol in the caller and posts the TCP connect (and the
sends) to the session's worker; the server's own connect reaches the client first, and the accept
replaces the connecting session (docs/PROTOCOL.md §7 row 13: unregistered at once, its stop posted
to its worker), so ``connect_to`` hands out the accepted session and both probes travel on it, all
before that worker got round to the first session. On a loaded machine a posted call waits for its
worker up to ~20 ms (measured on 2 cores at load 5), and a probe takes ~2 ms. The session was late,
not stuck: once its worker runs it stops with ms_handle_reset and reports its queue. The oracle
judged it too early; it now waits for the session to settle (``check_lossy_session``), and
``stuck_connections`` tells a late session (its work still queued) from a stuck one.

Here the worker is late on purpose: everything posted to the client's connecting session is held
until the race and the probes are over.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import pytest
from lossless_util import Cluster, check_lossy_session, send_range, stuck_connections, wait_for

from msgr import Config, EntityName, Policy
from msgr.connection import AsyncConnection
from msgr.protocol.states import State

PER_SIDE = 10
OSD, CLIENT = EntityName.TYPE_OSD, EntityName.TYPE_CLIENT


class HeldPosts:
    """Holds what is posted to one messenger's connecting sessions (a late worker) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messenger: object = None
        self.held: list[tuple[AsyncConnection, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._real = AsyncConnection._post
        monkeypatch.setattr(AsyncConnection, "_post", lambda conn, fn, what="": self._post(conn, fn, what))

    def _post(self, conn: AsyncConnection, fn: Callable[[], None], what: str) -> None:
        with self._lock:
            if self.messenger is not None and conn._msgr is self.messenger and conn._target is not None:
                self.held.append((conn, fn))
                return
        self._real(conn, fn, what)

    def release(self) -> None:
        """The worker gets round to it: what was held runs in one turn of the worker, in the order
        it was posted (as a worker's queue does)."""
        with self._lock:
            self.messenger = None
            held, self.held = self.held, []
        for conn in dict.fromkeys(c for c, _fn in held):
            fns = [fn for c, fn in held if c is conn]
            self._real(conn, functools.partial(_run_in_order, fns), "held posts")


def _run_in_order(fns: list[Callable[[], None]]) -> None:
    for fn in fns:
        fn()


@pytest.mark.parametrize("threads", [1, 3])
def test_replaced_connecting_session_on_a_late_worker_resets_when_its_worker_runs(monkeypatch, threads):
    late = HeldPosts(monkeypatch)
    cfg = Config(ms_async_op_threads=threads, ms_initial_backoff=0.01, ms_max_backoff=0.05)
    cluster = Cluster()
    try:
        a, ra = cluster.make(EntityName.client(4100), 70_001, cfg.copy(), policies={OSD: Policy.lossy_client()})
        b, rb = cluster.make(EntityName.osd(1), 70_002, cfg.copy(), policies={CLIENT: Policy.stateless_server()})
        aaddr, baddr = a.get_myaddr(), b.get_myaddr()
        late.messenger = a
        first = a.connect_to(OSD, baddr)
        send_range(first, 1, range(PER_SIDE))
        d = b.connect_to(CLIENT, aaddr)
        send_range(d, 2, range(PER_SIDE))

        def state() -> str:
            return (f"b got {dict(rb.by_key)} a got {dict(ra.by_key)}; a events {[k for k, _c in ra.events]}; "
                    f"a {a.connections()}; b {b.connections()}")
        # b's connect is accepted and replaces the first session; connect_to hands out the accepted one
        wait_for(lambda: a.connect_to(OSD, baddr) is not first and ra.n(2) >= PER_SIDE, timeout=30,
                 what="b's session to replace a's connecting one", detail=state)
        # what the race stress saw: a's first session CONNECTING, no socket, no reset, nothing arrived
        assert first in a.connections() and first._proto.state is State.CONNECTING and first._sock is None
        assert ra.count("reset") == 0 and rb.n(1) == 0
        # its worker has not run what was posted to it: from there it waits for nothing (the watchdog sees it)
        assert any(repr(first) in s for s in stuck_connections(a)), stuck_connections(a)
        # the probes of the race stress, both ways, on what connect_to hands out now
        send_range(a.connect_to(OSD, baddr), 1, range(3), session=10)
        send_range(b.connect_to(CLIENT, aaddr), 2, range(3), session=10)
        wait_for(lambda: rb.n(1, 10) >= 3 and ra.n(2, 10) >= 3, timeout=30, what="the probes", detail=state)
        # the worker is late, not gone: the oracle waits for the session to settle
        threading.Timer(0.2, late.release).start()
        got = check_lossy_session(ra, rb, first, 1, 0, PER_SIDE, state)
        assert got == [] and ra.count("reset", first) == 1
        reported = [i for s, sess, i in ra.discarded_ids() if (s, sess) == (1, 0)]
        assert reported == list(range(PER_SIDE)), f"{state()}: the stopped session's queue is reported: {reported}"
        check_lossy_session(rb, ra, d, 2, 0, PER_SIDE, state)
        wait_for(lambda: first not in a.connections(), timeout=30, what="the first session closed", detail=state)
        assert not stuck_connections(a) and not stuck_connections(b)
    finally:
        late.release()
        cluster.close()
