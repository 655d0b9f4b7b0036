"""Perf counters with the names, units and sections of Ceph's AsyncMessenger workers.

Each worker thread gets its own :class:`PerfCounters` block, touched only by that thread, so the
hot path pays a plain attribute increment and no lock. :meth:`MessengerPerf.dump` reads them the
way ``ceph daemon ... perf dump`` shows Ceph's:

- ``AsyncMessenger::Worker-N``: Ceph's counters of worker N (running times in float seconds,
  latencies as ``{"avgcount", "sum", "avgtime"}`` in seconds);
- ``AsyncMessenger`` (pymsgr): the same summed over every thread, plus pymsgr's own counters
  (:data:`PYMSGR_COUNTERS`: write coalescing, faults, dispatch paths...).

A torn read of an int is impossible under the GIL, so a dump from another thread is a snapshot.
"""
from __future__ import annotations

import threading
from typing import Any

# Ceph perf counter type bits (PERFCOUNTER_*) and what ``perf schema`` calls them
_TIME, _U64, _LONGRUNAVG, _COUNTER = 0x1, 0x2, 0x4, 0x8

# Ceph's AsyncMessenger::Worker counters: name -> (kind, description, units); kinds:
# "counter" (an integer that only grows), "gauge" (an integer up and down), "time" (float
# seconds), "avg" (a latency: count and sum of seconds)
CEPH_COUNTERS: dict[str, tuple[str, str, str]] = {
    "msgr_recv_messages": ("counter", "Network received messages", "none"),
    "msgr_send_messages": ("counter", "Network sent messages", "none"),
    "msgr_recv_bytes": ("counter", "Network received bytes", "bytes"),
    "msgr_send_bytes": ("counter", "Network sent bytes", "bytes"),
    "msgr_created_connections": ("counter", "Created connection number", "none"),
    "msgr_active_connections": ("counter", "Active connection number", "none"),
    "msgr_running_total_time": ("time", "The total time of thread running", "none"),
    "msgr_running_send_time": ("time", "The total time of message sending", "none"),
    "msgr_running_recv_time": ("time", "The total time of message receiving", "none"),
    "msgr_running_fast_dispatch_time": ("time", "The total time of fast dispatch", "none"),
    "msgr_send_messages_queue_lat": ("avg", "Network sent messages lat", "none"),
    "msgr_connection_ready_timeouts": ("counter", "Number of not yet ready connections declared "
                                       "as dead", "none"),
    "msgr_connection_idle_timeouts": ("counter", "Number of connections closed due to idleness",
                                      "none"),
}

# pymsgr's own counters (only in the ``AsyncMessenger`` totals section)
PYMSGR_COUNTERS: dict[str, str] = {
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

# name -> description of every counter; the order is the order of the totals section
COUNTERS: dict[str, str] = {**{n: d for n, (_k, d, _u) in CEPH_COUNTERS.items()}, **PYMSGR_COUNTERS}

# integer counters (one slot each) and the nanosecond slots behind the "time"/"avg" counters
_INT_SLOTS = tuple(n for n, (k, _d, _u) in CEPH_COUNTERS.items() if k in ("counter", "gauge")) \
    + tuple(PYMSGR_COUNTERS)
_TIME_SLOTS = {"msgr_running_total_time": "total_ns", "msgr_running_send_time": "send_ns",
               "msgr_running_recv_time": "recv_ns", "msgr_running_fast_dispatch_time": "fast_ns"}
_AVG_SLOTS = {"msgr_send_messages_queue_lat": ("queue_lat_n", "queue_lat_ns")}


def _avg(count: int, sum_ns: int) -> dict[str, Any]:
    total = sum_ns / 1e9
    return {"avgcount": count, "sum": total, "avgtime": total / count if count else 0.0}


class PerfCounters:
    """One block of counters: integer attributes named as Ceph's counters, and nanosecond sums
    (``total_ns``, ``send_ns``, ``recv_ns``, ``fast_ns``; ``queue_lat_n``/``queue_lat_ns``)
    behind the float-second ones."""

    __slots__ = _INT_SLOTS + tuple(_TIME_SLOTS.values()) + ("queue_lat_n", "queue_lat_ns")

    # for type checkers (the slots above are built from the tables)
    msgr_recv_messages: int
    msgr_send_messages: int
    msgr_recv_bytes: int
    msgr_send_bytes: int
    msgr_created_connections: int
    msgr_active_connections: int
    msgr_connection_ready_timeouts: int
    msgr_connection_idle_timeouts: int
    msgr_send_calls: int
    msgr_recv_calls: int
    msgr_eagain: int
    msgr_throttle_waits: int
    msgr_faults: int
    msgr_wrong_node: int
    msgr_reconnects: int
    msgr_keepalives: int
    msgr_local_messages: int
    msgr_fast_dispatched: int
    msgr_queued_dispatched: int
    msgr_injected_failures: int
    total_ns: int
    send_ns: int
    recv_ns: int
    fast_ns: int
    queue_lat_n: int
    queue_lat_ns: int

    def __init__(self) -> None:
        for name in PerfCounters.__slots__:
            setattr(self, name, 0)

    def reset(self) -> None:
        """Zero the counters; the active connections are a level, not a count, and stay."""
        for name in PerfCounters.__slots__:
            if name != "msgr_active_connections":
                setattr(self, name, 0)

    def queue_lat(self, count: int, wait_ns: int) -> None:
        """``count`` messages reached the protocol after waiting ``wait_ns`` each."""
        self.queue_lat_n += count
        self.queue_lat_ns += count * wait_ns

    def raw(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in PerfCounters.__slots__}


def _section(raw: dict[str, int], names: dict[str, Any]) -> dict[str, Any]:
    """Counters ``names`` of a raw slot dict in Ceph's units."""
    out: dict[str, Any] = {}
    for name in names:
        if name in _TIME_SLOTS:
            out[name] = raw[_TIME_SLOTS[name]] / 1e9
        elif name in _AVG_SLOTS:
            n_slot, ns_slot = _AVG_SLOTS[name]
            out[name] = _avg(raw[n_slot], raw[ns_slot])
        else:
            out[name] = raw[name]
    return out


def worker_section(index: int) -> str:
    return f"AsyncMessenger::Worker-{index}"


class MessengerPerf:
    """The counter blocks of one messenger: one per worker, one per other thread that counts."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._blocks: dict[str, PerfCounters] = {}
        self._worker_blocks: dict[int, PerfCounters] = {}   # by worker index (never removed)
        self._local = threading.local()

    def block(self, label: str) -> PerfCounters:
        """The block for ``label``; created on first use. Worker blocks are labelled
        :func:`worker_section` and are the ones dumped as Ceph's worker sections."""
        with self._lock:
            b = self._blocks.get(label)
            if b is None:
                b = self._blocks[label] = PerfCounters()
            return b

    def worker_block(self, index: int) -> PerfCounters:
        """The block of worker ``index`` (``AsyncMessenger::Worker-<index>``)."""
        # once per session: a dict read, not the section name formatted and the lock taken
        b = self._worker_blocks.get(index)
        if b is None:
            b = self._worker_blocks[index] = self.block(worker_section(index))
        return b

    def here(self) -> PerfCounters:
        """The calling thread's block (for code that does not run on a worker)."""
        b = getattr(self._local, "block", None)
        if b is None:
            b = self._local.block = self.block(f"thread:{threading.current_thread().name}")
        return b

    def _raw_blocks(self) -> dict[str, dict[str, int]]:
        with self._lock:
            blocks = dict(self._blocks)
        return {label: b.raw() for label, b in blocks.items()}

    def totals(self) -> dict[str, Any]:
        """Every counter summed over all blocks, in Ceph's units (the ``AsyncMessenger`` section)."""
        summed = dict.fromkeys(PerfCounters.__slots__, 0)
        for raw in self._raw_blocks().values():
            for slot, v in raw.items():
                summed[slot] += v
        return _section(summed, COUNTERS)

    def dump(self, extra: dict[str, Any] | None = None, logger: str | None = None,
             counter: str | None = None) -> dict[str, Any]:
        """Ceph's ``perf dump``: worker sections, the totals, then ``extra`` sections.

        ``logger`` keeps one section, ``counter`` one counter of it, as ``perf dump LOGGER COUNTER``.
        """
        raws = self._raw_blocks()
        out: dict[str, Any] = {}
        workers = sorted((label for label in raws if label.startswith("AsyncMessenger::Worker-")),
                         key=lambda s: int(s.rsplit("-", 1)[1]))
        for label in workers:
            out[label] = _section(raws[label], CEPH_COUNTERS)
        out["AsyncMessenger"] = self.totals()
        if extra:
            out.update(extra)
        if logger is not None:
            out = {logger: out[logger]} if logger in out else {}
            if counter is not None and logger in out:
                section = out[logger]
                out[logger] = {counter: section[counter]} if counter in section else {}
        return out

    def schema(self, extra: dict[str, dict[str, tuple[str, str, str]]] | None = None) -> dict[str, Any]:
        """Ceph's ``perf schema`` for the sections :meth:`dump` gives."""
        out: dict[str, Any] = {}
        for label in self.dump():
            if label.startswith("AsyncMessenger::Worker-"):
                out[label] = {n: _schema_entry(*spec) for n, spec in CEPH_COUNTERS.items()}
        totals = {n: _schema_entry(*spec) for n, spec in CEPH_COUNTERS.items()}
        totals.update({n: _schema_entry("counter", d, "none") for n, d in PYMSGR_COUNTERS.items()})
        out["AsyncMessenger"] = totals
        for label, specs in (extra or {}).items():
            out[label] = {n: _schema_entry(*spec) for n, spec in specs.items()}
        return out

    def reset(self, label: str | None = None) -> bool:
        """Zero every block (``label`` None or "all") or one worker section; False if unknown."""
        with self._lock:
            if label in (None, "all", "AsyncMessenger"):
                blocks = list(self._blocks.values())
            elif label in self._blocks:
                blocks = [self._blocks[label]]
            else:
                return False
        for b in blocks:
            b.reset()
        return True


def _schema_entry(kind: str, description: str, units: str) -> dict[str, Any]:
    """One counter as Ceph's ``perf schema`` describes it."""
    if kind == "time":
        typ, metric, value = _TIME, "gauge", "real"
    elif kind == "avg":
        typ, metric, value = _TIME | _LONGRUNAVG, "gauge", "real-integer-pair"
    elif kind == "gauge":
        typ, metric, value = _U64, "gauge", "integer"
    else:
        typ, metric, value = _U64 | _COUNTER, "counter", "integer"
    return {"type": typ, "metric_type": metric, "value_type": value, "description": description,
            "nick": "", "priority": 0, "units": units}
