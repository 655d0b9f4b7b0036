"""Shared helpers for the messenger-level reliability tests (issue 5).

* :class:`Tagged` -- a small message whose front carries (sender, session, id),
  so a receiver can check "every id once, in order, per session" without
  trusting the messenger's own seq numbers.
* :class:`Recorder` -- a dispatcher that records every Tagged message per
  (sender, session) and per connection, plus connection events (connect,
  accept, reset, remote reset, refused) and discarded-message reports.
* :func:`wait_for` -- poll a predicate until a deadline; the deadline only
  turns a hang into a failure (never sleep-and-hope, no timing asserts).
* :func:`check_exact` -- "exactly once, in order" with a diagnosis that names
  the first duplicate / gap / reordering.
* :class:`Cluster` -- creates messengers and always shuts them down.
* :func:`check_lossy_session` -- the lossy oracle: a prefix arrives, any loss comes with
  ``ms_handle_reset`` on that connection, judged once the session has settled.
* :func:`stuck_connections` -- connections that wait for nothing (CONNECTING, no socket, no timer).
"""
from __future__ import annotations

import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.protocol.actions import TimerKind

_FMT = struct.Struct("<IIQ")


class Tagged(Message):
    """Front = (sender u32, session u32, id u64) + optional padding."""
    TYPE = 0x7F10

    def __init__(self, sender: int = 0, session: int = 0, ident: int = 0, pad: bytes = b"") -> None:
        super().__init__()
        self.sender, self.session, self.ident = sender, session, ident
        self.front = _FMT.pack(sender, session, ident) + pad

    def decode_payload(self) -> None:
        self.sender, self.session, self.ident = _FMT.unpack_from(self.front)

    @property
    def key(self) -> tuple[int, int]:
        return self.sender, self.session


class Recorder(Dispatcher):
    """Records Tagged messages and connection events (thread-safe)."""

    EVENTS = ("connect", "accept", "reset", "remote_reset", "refused")

    def __init__(self, fast: bool = False) -> None:
        self.fast = fast
        self.lock = threading.Lock()
        self.by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.by_conn: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        self.conns: dict[int, Any] = {}
        self.events: list[tuple[str, Any]] = []
        self.discarded: list[tuple[Any, tuple]] = []
        self.received = 0

    # --- messages ---------------------------------------------------------
    def ms_can_fast_dispatch(self, msg: Message) -> bool:
        return self.fast and isinstance(msg, Tagged)

    def ms_fast_dispatch(self, msg: Message) -> None:
        self._record(msg)

    def ms_dispatch(self, msg: Message) -> bool:
        if not isinstance(msg, Tagged):
            return False
        self._record(msg)
        return True

    def _record(self, msg: Tagged) -> None:
        conn = msg.get_connection()
        with self.lock:
            self.by_key[msg.key].append(msg.ident)
            self.by_conn[id(conn)].append((msg.sender, msg.session, msg.ident))
            self.conns[id(conn)] = conn
            self.received += 1

    # --- events -----------------------------------------------------------
    def _event(self, kind: str, conn: Any) -> None:
        with self.lock:
            self.events.append((kind, conn))

    def ms_handle_connect(self, conn: Any) -> None:
        self._event("connect", conn)

    def ms_handle_accept(self, conn: Any) -> None:
        self._event("accept", conn)

    def ms_handle_reset(self, conn: Any) -> bool:
        self._event("reset", conn)
        return True

    def ms_handle_remote_reset(self, conn: Any) -> None:
        self._event("remote_reset", conn)

    def ms_handle_refused(self, conn: Any) -> bool:
        self._event("refused", conn)
        return True

    def ms_handle_discarded(self, conn: Any, messages: tuple) -> None:
        with self.lock:
            self.discarded.append((conn, tuple(messages)))

    # --- queries ----------------------------------------------------------
    def count(self, kind: str, conn: Any = None) -> int:
        with self.lock:
            return sum(1 for k, c in self.events if k == kind and (conn is None or c is conn))

    def ids(self, sender: int, session: int = 0) -> list[int]:
        with self.lock:
            return list(self.by_key.get((sender, session), ()))

    def n(self, sender: int, session: int = 0) -> int:
        with self.lock:
            return len(self.by_key.get((sender, session), ()))

    def discarded_ids(self) -> list[tuple[int, int, int]]:
        with self.lock:
            return [(m.sender, m.session, m.ident) for _c, msgs in self.discarded for m in msgs
                    if isinstance(m, Tagged)]


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             detail: Callable[[], str] | None = None, interval: float = 0.002) -> None:
    """Poll ``pred`` until it is true; past ``timeout`` raise AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def diagnose(got: list[int], want: list[int]) -> str:
    """A short account of how ``got`` differs from ``want`` (dups, missing, first reorder)."""
    seen: dict[int, int] = {}
    dups = []
    for i in got:
        seen[i] = seen.get(i, 0) + 1
        if seen[i] == 2:
            dups.append(i)
    missing = [i for i in want if i not in seen]
    extra = sorted(set(seen) - set(want))
    first_bad = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    around = got[max(0, first_bad - 3):first_bad + 4] if first_bad is not None else []
    return (f"got {len(got)} want {len(want)}; duplicates {dups[:10]} ({len(dups)}); missing {missing[:10]} "
            f"({len(missing)}); unexpected {extra[:10]}; first mismatch at index {first_bad} "
            f"(got ...{around}...)")


def check_exact(got: list[int], want: Iterable[int], what: str = "") -> None:
    """Assert ``got`` is exactly ``want``: every id once, in order."""
    want = list(want)
    if got != want:
        raise AssertionError(f"{what}: not exactly-once in order: {diagnose(got, want)}")


def perf(ms: Any) -> dict[str, int]:
    return ms.perf_dump()["AsyncMessenger"]


class Cluster:
    """Messengers made for one test; ``close()`` shuts every one down (use as a fixture)."""

    def __init__(self) -> None:
        self.all: list[Any] = []

    def make(self, name: EntityName, nonce: int, cfg: Config | None = None, policy: Policy | None = None,
             policies: dict[int, Policy] | None = None, bind: str | None = "v1:127.0.0.1:0",
             fast: bool = False) -> tuple[Any, Recorder]:
        ms = Messenger.create(name, nonce=nonce, config=cfg or Config())
        ms.set_default_policy(policy or Policy.lossless_peer())
        for t, p in (policies or {}).items():
            ms.set_policy(t, p)
        rec = Recorder(fast)
        ms.add_dispatcher_tail(rec)
        if bind is not None:
            ms.bind(EntityAddr.parse(bind))
        ms.start()
        self.all.append(ms)
        return ms, rec

    def stop(self, ms: Any) -> None:
        ms.shutdown()
        ms.wait()
        if ms in self.all:
            self.all.remove(ms)

    def close(self) -> None:
        for ms in self.all:
            ms.shutdown()
        for ms in self.all:
            ms.wait()
        self.all.clear()


def live_sessions(ms: Any, peer: EntityAddr) -> list[Any]:
    """The connections of ``ms`` to ``peer`` that are not closed (registered or not)."""
    return [c for c in ms.connections()
            if not c._closed and c._proto.peer_addr == peer and c._proto.state.name != "CLOSED"]


def send_range(conn: Any, sender: int, ids: Iterable[int], session: int = 0, pad: bytes = b"") -> None:
    for i in ids:
        conn.send_message(Tagged(sender, session, i, pad))


def check_lossy_session(sender_rec: Recorder, rec: Recorder, conn: Any, sender: int, session: int, total: int,
                        what: str | Callable[[], str], timeout: float = 30.0) -> list[int]:
    """The lossy oracle (docs/DELIVERY.md) for the ``total`` messages ``sender`` sent on ``conn`` as
    ``session``: what arrives is a prefix, once each, in order; anything missing comes with
    ``ms_handle_reset`` on ``conn`` at the sender. Returns what arrived.

    Judged once the session has settled: every message arrived, or ``conn``'s reset was dispatched.
    Until then the session is still at work, and may be slow to show it: a replaced session whose
    worker has not yet run its posted start and stop is CONNECTING with no socket and unregistered,
    and connect_to already hands out its successor (tests/test_lossy_slow_worker.py). A session
    that never settles fails here after ``timeout``.
    """
    def detail() -> str:
        return what() if callable(what) else what
    wait_for(lambda: rec.n(sender, session) >= total or sender_rec.count("reset", conn) > 0, timeout=timeout,
             what=f"{sender}/{session} to settle (every message arrived, or ms_handle_reset on {conn!r})",
             detail=detail)
    got = rec.ids(sender, session)
    k = len(got)
    assert got == list(range(k)), f"{detail()}: {sender}/{session} not a prefix, once each, in order: {got}"
    if k < total:
        assert sender_rec.count("reset", conn) > 0, \
            f"{detail()}: {sender}/{session} lost {list(range(k, total))} without a reset on {conn!r}"
    return got


_RETRY_TIMERS = {TimerKind.RECONNECT, TimerKind.CONNECTION_READY}   # what moves a CONNECTING session on


def stuck_connections(ms: Any) -> list[str]:
    """The live connections of ``ms`` that wait for nothing: CONNECTING with no socket (no TCP connect
    in flight) and no timer (no backoff, no ms_connection_ready_timeout) -- nothing would ever send
    their queue or report it.

    Each is looked at on its own worker, after whatever was already posted to it ran: a consistent
    view, and a connection whose worker is merely late is not taken for a stuck one."""
    found: list[str] = []
    for conn in ms.connections():
        def look(c: Any = conn) -> str | None:
            p = c._proto
            if c._closed or p.state.name != "CONNECTING" or c._sock is not None or _RETRY_TIMERS & c._timers.keys():
                return None
            return (f"{c!r}: CONNECTING, no socket, no timer (reconnect armed {p._reconnect_armed}, "
                    f"{len(p.outq)} queued, last fault {c._last_fault!r})")
        verdict = conn._center.submit_to(look, wait=True)
        if verdict is not None:
            found.append(verdict)
    return found
