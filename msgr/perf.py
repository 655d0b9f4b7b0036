"""Perf counters with the names of Ceph's AsyncMessenger worker counters.

Each worker thread gets its own :class:`PerfCounters` block, touched only by
that thread, so the hot path pays a plain attribute increment and no lock;
:meth:`MessengerPerf.dump` sums the blocks (a torn read of an int is
impossible under the GIL, so a dump from another thread is merely a snapshot).
"""
from __future__ import annotations

import threading
from typing import Any

# name -> description; the order is the order of perf_dump()
COUNTERS: dict[str, str] = {
    "msgr_recv_messages": "network received messages",
    "msgr_send_messages": "network sent messages",
    "msgr_recv_bytes": "network received bytes",
    "msgr_send_bytes": "network sent bytes",
    "msgr_created_connections": "connections created",
    "msgr_active_connections": "connections alive now (a gauge)",
    "msgr_running_total_time_us": "time spent handling socket events",
    "msgr_running_send_time_us": "time spent writing",
    "msgr_running_recv_time_us": "time spent reading and parsing",
    "msgr_running_fast_dispatch_time_us": "time spent in fast dispatch",
    "msgr_send_calls": "sendmsg calls (messages / calls = write coalescing)",
    "msgr_recv_calls": "recv_into calls",
    "msgr_eagain": "writes that hit a full socket buffer",
    "msgr_throttle_waits": "receive throttle retries (message, byte or dispatch throttle full)",
    "msgr_faults": "connection faults",
    "msgr_wrong_node": "connects that met another process at the peer's address (wrong node)",
    "msgr_reconnects": "reconnect attempts",
    "msgr_keepalives": "keepalives sent",
    "msgr_local_messages": "messages delivered to ourselves",
    "msgr_fast_dispatched": "messages fast-dispatched on a worker",
    "msgr_queued_dispatched": "messages dispatched by the dispatch queue",
    "msgr_injected_failures": "socket failures injected (ms_inject_socket_failures)",
}


# the running times are summed in nanoseconds (a µs sum of sub-µs spans would lose them all) and
# read in µs, the unit of Ceph's counters: ``msgr_running_send_time_us`` reads ``send_ns // 1000``
_TIMES = {"msgr_running_total_time_us": "total_ns", "msgr_running_send_time_us": "send_ns",
          "msgr_running_recv_time_us": "recv_ns", "msgr_running_fast_dispatch_time_us": "fast_ns"}


def _us_of(ns_slot: str) -> property:
    def get(self: "PerfCounters") -> int:
        return getattr(self, ns_slot) // 1000

    def put(self: "PerfCounters", us: int) -> None:
        setattr(self, ns_slot, us * 1000)
    return property(get, put)


class PerfCounters:
    """One block of counters; attributes named as in :data:`COUNTERS`."""

    __slots__ = tuple(n for n in COUNTERS if n not in _TIMES) + tuple(_TIMES.values())

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


for _name, _slot in _TIMES.items():
    setattr(PerfCounters, _name, _us_of(_slot))


class MessengerPerf:
    """The counter blocks of one messenger, one per thread that touches them."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._blocks: dict[str, PerfCounters] = {}
        self._local = threading.local()

    def block(self, label: str) -> PerfCounters:
        """The block for ``label`` (e.g. a worker name); created on first use."""
        with self._lock:
            b = self._blocks.get(label)
            if b is None:
                b = self._blocks[label] = PerfCounters()
            return b

    def here(self) -> PerfCounters:
        """The calling thread's block (for code that does not know its worker)."""
        b = getattr(self._local, "block", None)
        if b is None:
            b = self._local.block = self.block(threading.current_thread().name)
        return b

    def totals(self) -> dict[str, int]:
        with self._lock:
            blocks = list(self._blocks.values())
        out = dict.fromkeys(COUNTERS, 0)
        for b in blocks:
            for name in COUNTERS:
                out[name] += getattr(b, name)
        return out

    def dump(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-serialisable snapshot: totals, then each block, then ``extra``."""
        with self._lock:
            per = {label: b.as_dict() for label, b in sorted(self._blocks.items())}
        out: dict[str, Any] = {"AsyncMessenger": self.totals(), "per_thread": per}
        if extra:
            out.update(extra)
        return out

    def reset(self) -> None:
        with self._lock:
            for b in self._blocks.values():
                for name in COUNTERS:
                    setattr(b, name, 0)
