"""Ceph-style messenger debugging: ``debug_ms`` levels on the ``msgr`` loggers.

Ceph's ``debug_ms = N`` (0-30) is mapped onto Python logging levels of the ``msgr`` logger
(and so of every ``msgr.*`` logger): level 0 is ``INFO``, level 1 is ``DEBUG`` (10) and each two
further Ceph levels go one Python level lower, down to 1 (see :func:`python_level`). The lines
are written to the logger ``msgr.ms`` (Ceph's subsystem name):

- level 1: one line per message sent (``-- me --> peer -- MPing(...) v1 -- ?+0 0x.. con 0x..``)
  and received (``-- me <== osd.1 peer 7 ==== MPing(...) v1 ==== 0+0+0 (unknown 0 0 0) ...``);
- level 10: protocol state transitions and the server's handshake decisions;
- level 20: every action the protocol asks of its connection (timers, sockets, notifications).

When ``debug_ms`` asks for lines and logging is not configured at all (no handler on the way
to the root logger), a stderr handler is added to ``msgr``, as Ceph writes to stderr without a
log file. The hot paths read one boolean (:data:`gate`) before building any of these lines, so logging that
is off costs an attribute read per message. The gate follows the ``msgr.ms`` logger's effective
level; it is refreshed when a messenger applies its config or starts, when a connection is
created, and by :func:`refresh` (call it after changing logging levels by hand at run time).
"""
from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message

MSGR_LOGGER = "msgr"
log = logging.getLogger("msgr.ms")

MESSAGES = 1      # Ceph level of the per-message lines
STATES = 10       # state transitions and handshake decisions
ACTIONS = 20      # every protocol action

STDERR_FORMAT = "%(asctime)s %(threadName)s %(levelname)s %(name)s %(message)s"


def python_level(ceph_level: int) -> int:
    """The Python logging level at which a Ceph ``debug_ms`` level's lines are logged."""
    if ceph_level <= 0:
        return logging.INFO
    return max(1, logging.DEBUG - ceph_level // 2)


def ceph_level(py_level: int) -> int:
    """The highest Ceph level whose lines pass a logger at Python level ``py_level``."""
    best = 0
    for lvl in range(1, 31):
        if python_level(lvl) >= py_level:
            best = lvl
    return best


class DebugGate:
    """What the hot paths ask before formatting a line: plain booleans, refreshed rarely."""

    __slots__ = ("actions", "level", "messages", "states")

    def __init__(self) -> None:
        self.messages = False
        self.states = False
        self.actions = False
        self.level = 0

    def set_level(self, level: int) -> None:
        self.level = level
        self.messages = level >= MESSAGES
        self.states = level >= STATES
        self.actions = level >= ACTIONS


gate = DebugGate()


_applied = [0, logging.NOTSET]   # the last debug_ms applied: [Ceph level, its Python level]


def refresh() -> int:
    """Re-read the ``msgr.ms`` logger's effective level into :data:`gate`; the Ceph level."""
    py = log.getEffectiveLevel()
    if py == _applied[1]:
        level = _applied[0]      # exact, where the Python level stands for several Ceph levels
    else:
        level = ceph_level(py) if py <= logging.DEBUG else 0
    if level != gate.level:   # run per accepted session: most find the level unchanged
        gate.set_level(level)
    return level


def set_debug_ms(value: str | int) -> int:
    """Apply a ``debug_ms`` value (``N`` or ``"N/M"``) to the ``msgr`` loggers; the log level.

    Logging is process-wide in Python, so the last messenger (or admin socket ``config set``)
    to apply a ``debug_ms`` wins. The gather level (``M``) is accepted for Ceph compatibility;
    pymsgr keeps no in-memory log, so it changes nothing.
    """
    from msgr.config_values import parse_debug_level
    level, _gather = parse_debug_level(str(value))
    logger = logging.getLogger(MSGR_LOGGER)
    logger.setLevel(python_level(level))
    _applied[:] = [level, python_level(level)]
    if level > 0 and not logger.hasHandlers():
        # nothing would print the lines asked for (logging is not configured): like a Ceph
        # daemon without a log file, write them to stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
        logger.addHandler(handler)
    return refresh()


def describe(msg: Message) -> str:
    """A message as Ceph's log lines show it: its kind, the interesting header fields, version."""
    h = msg.header
    tid = f" tid {h.tid}" if h.tid else ""
    return f"{type(msg).__name__}(type {h.type:#x}{tid}) v{h.version}"


def sent_line(me: Any, peer: Any, msg: Message, conn: Any) -> None:
    """Ceph's level-1 line for a message handed to a connection."""
    log.debug("-- %s --> %s -- %s -- ?+%d %#x con %#x", me, peer, describe(msg), len(msg.data),
              id(msg), id(conn))


def received_line(me: Any, peer_name: Any, peer: Any, msg: Message, conn: Any) -> None:
    """Ceph's level-1 line for a message received and about to be dispatched."""
    h = msg.header
    f = msg.footer
    crcs = f"{f.front_crc} {f.middle_crc} {f.data_crc}" if f is not None else "0 0 0"
    log.debug("-- %s <== %s %s %d ==== %s ==== %d+%d+%d (unknown %s) %#x con %#x", me, peer_name,
              peer, h.seq, describe(msg), len(msg.front), len(msg.middle), len(msg.data), crcs,
              id(msg), id(conn))


def conn_line(level: int, me: Any, peer: Any, conn: Any, proto: Any, text: str) -> None:
    """Ceph's ``--1- me >> peer conn(...)`` prefix, then ``text``, at Ceph level ``level``."""
    policy = getattr(proto, "policy", None)
    lossy = 1 if policy is not None and policy.lossy else 0
    state = getattr(proto.state, "name", proto.state)
    log.log(python_level(level), "--1- %s >> %s conn(%#x s=%s pgs=%s cs=%s l=%d).%s", me, peer,
            id(conn), state, getattr(proto, "peer_global_seq", 0), getattr(proto, "connect_seq", 0),
            lossy, text)


# --- the hooks of msgr/connection.py and msgr/dispatch_queue.py (called only when the gate is on) ---
_seen: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _addrs(conn: Any) -> tuple[Any, Any]:
    """(our address, the peer's) of any connection performer (the simulator's have no messenger)."""
    messenger_of = getattr(conn, "get_messenger", None)
    ms = messenger_of() if messenger_of is not None else None
    me = ms.get_myaddr() if ms is not None else getattr(getattr(conn, "_proto", None), "host", "?")
    peer_of = getattr(conn, "get_peer_addr", None)
    peer = peer_of() if peer_of is not None else getattr(getattr(conn, "_proto", None), "peer_addr", "?")
    return me, peer


def trace_sent(conn: Any, msg: Message) -> None:
    me, peer = _addrs(conn)
    sent_line(me, peer, msg, conn)


def trace_received(conn: Any, msg: Message) -> None:
    me, peer = _addrs(conn)
    received_line(me, msg.get_source(), peer, msg, conn)


def trace_progress(conn: Any) -> None:
    """After a protocol call: a state transition or a new handshake decision, once each."""
    proto = conn._proto  # ConnectionCore's machine (these hooks are its tracing)
    state = proto.state
    decision = getattr(proto, "last_decision", None)
    before = _seen.get(proto)
    old_state, old_decision = before if before is not None else (None, None)
    me, peer = _addrs(conn)
    if decision is not None and decision is not old_decision:
        why = _decision_text(decision.row)
        tag = getattr(decision.tag, "name", None)
        conn_line(STATES, me, peer, conn, proto,
                  f"handle_connect_message_2 decision row {decision.row} ({why}): "
                  f"{decision.do.name.lower()}{' ' + tag if tag else ''}"
                  f"{' reset' if decision.reset_from_peer else ''}")
    if state is not old_state:
        old = getattr(old_state, "name", "NONE")
        conn_line(STATES, me, peer, conn, proto, f"state {old} -> {state.name}")
    _seen[proto] = (state, decision)


def trace_actions(conn: Any, actions: list[Any]) -> None:
    me, peer = _addrs(conn)
    proto = conn._proto  # ConnectionCore's machine (these hooks are its tracing)
    for act in actions:
        if type(act).__name__ != "Deliver":   # deliveries have their own level-1 line
            conn_line(ACTIONS, me, peer, conn, proto, f"action {act!r}")


def _decision_text(row: int) -> str:
    from msgr.protocol.handshake import SERVER_DECISIONS
    for r, why, _cond, _outcome in SERVER_DECISIONS:
        if r == row:
            return why
    return "?"
