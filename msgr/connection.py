"""AsyncConnection: one socket on one worker, driven by a sans-IO ProtocolV1.

The protocol decides; what each of its actions means is written once in
:class:`~msgr.connection_core.ConnectionCore` (shared with the simulator and
the wire pair), and this module supplies the primitives on a real socket and
worker. Every protocol call returns a list of actions, which ``_handle``
performs in order; afterwards the protocol's output is pulled and written with
one ``sendmsg``.

Threads: everything that touches the socket or the protocol runs on the
connection's worker. Other threads (``send_message`` from the application,
the messenger's ``mark_down``) post work with ``dispatch_event_external``;
``send_message`` coalesces: messages go into a pending list (appended
without a lock, taken under ``_out_lock``) and only the first of a burst
posts an event, so a burst leaves in one ``sendmsg``.

Errors: every ``OSError`` from the socket goes down one path,
:meth:`_socket_error` -> ``proto.on_socket_error``. An unexpected exception
in a protocol call or a worker-side callback faults only this connection.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import threading
import time
from _thread import RLock as _RLock
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from eventcenter import EVENT_READABLE, EVENT_WRITABLE
from eventcenter.clock import MonotonicClock
from eventcenter.worker import on_worker_thread
from msgr import debug
from msgr.connection_base import Connection, LoopbackConnection  # noqa: F401 (re-exported)
from msgr.connection_core import ConnectionCore
from msgr.connection_delivery import DeliveringConnection
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError, WrongNodeError
from msgr.flush import FlushingConnection
from msgr.message import release_throttles
from msgr.protocol import actions as A
from msgr.protocol.outq import PRECOMPUTE_MIN, precompute_crcs
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.socket_writer import SocketWriter

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message
    from msgr.messenger import MessengerHost

__all__ = ["AsyncConnection", "Connection", "LoopbackConnection"]   # the last two re-exported

_log = logging.getLogger("msgr.connection")

READ_ROUNDS = 16    # recv_into calls per readable event before yielding to other fds

_mono_ns = time.monotonic_ns   # perf running times (real time, whatever clock the protocol runs on)
_dbg = debug.gate   # debug_ms: the hot paths read one of its booleans before any log line
# read once per session: module constants, not Enum class attributes (the hook in states.States)
_THROTTLE_RETRY, _CONNECTION_READY = A.TimerKind.THROTTLE_RETRY, A.TimerKind.CONNECTION_READY
_Deliver = A.Deliver
_NEW = EntityName.NEW
#: the handle of a CONNECTION_READY timer, which is a deadline on the connection tick (_on_tick)
_READY_ON_TICK = -1


def tune_socket(sock: socket.socket, cfg: Any) -> bool:
    """Apply ms_tcp_nodelay and ms_tcp_rcvbuf to ``sock``; False if the OS refused. On a listening
    socket they hold for every socket it accepts (Linux copies them at accept), as Ceph passes
    them to listen()."""
    try:
        if cfg.ms_tcp_nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if cfg.ms_tcp_rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.ms_tcp_rcvbuf)
    except OSError as exc:
        _log.debug("setsockopt failed: %s", exc)
        return False
    return True


def _locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An entry point of the worker into this connection: it runs under the session lock, which an
    accept deciding on this session holds too (msgr/connection_host.py, docs/ARCHITECTURE.md)."""
    @functools.wraps(fn)
    def run(self: AsyncConnection, *args: Any) -> Any:
        with self._lock:
            return fn(self, *args)
    return run


class AsyncConnection(SocketWriter, DeliveringConnection, FlushingConnection, Connection, ConnectionCore):
    """A session with one peer over TCP: what ``Messenger.connect_to`` and the callbacks hand out.

    Its public methods are :class:`~msgr.connection_base.Connection`'s (docs/USER_GUIDE.md, "Connection");
    the rest (its protocol machine, socket, worker) is underscored and belongs to the messenger.
    """

    # Its attributes as slots (as ProtocolV1's): ~40 are more than an instance dict shares keys for,
    # so each session built a private dict by resizing it. The bases have no slots, so an instance
    # dict stays for anything else; the four whose base gives a class-level default (made on first
    # use) are set in __init__, since a slot hides that default. tests/test_protocol_slots.py checks.
    __slots__ = (
        "_ack_stamp", "_center", "_closed", "_connecting", "_delay_timer", "_delayed", "_down",
        "_fault_count", "_fd", "_flushes", "_host", "_idle_us", "_in_read", "_inject",
        "_keepalive_cond", "_keepalive_waiters", "_last_active_us", "_last_fault", "_last_fault_error",
        "_lock", "_mono_clock", "_msgr", "_now_us", "_opened", "_published", "_out_lock", "_out_pending", "_out_posted",
        "_overrides", "_perf", "_posted_ns", "_precompute_crcs", "_proto", "_reading", "_ready_due_us", "_sock",
        "_target", "_target_type", "_tick_due_us", "_tick_timer", "_timers", "_turn_us", "_wake_dispatch",
        "_wbufs", "_worker", "_writing",
    )

    def __init__(self, host: MessengerHost, worker: Any, target: EntityAddr | None = None,
                 target_type: int | None = None, proto: Any = None) -> None:
        self._init_core()   # closed, _down, _timers, last_fault(_error), fault_count
        self._host = host    # the messenger's side of msgr/connection_host.py (per session, not per message)
        self._msgr = msgr = host.messenger
        self._worker = worker
        self._center = worker.center
        self._perf = host.perf.worker_block(worker.index)
        self._now_us: Callable[[], int] = host.clock.now_us
        # the OS monotonic clock: a read event takes its protocol time from its perf start stamp
        self._mono_clock = type(host.clock) is MonotonicClock
        if proto is None:
            proto = ProtocolV1(host, self)
        self._proto = proto
        self._target = target
        self._target_type = target_type
        # in the messenger's session map at some time (connect_to's, or registered by the protocol):
        # another session may then hold our protocol and reach us through it (_released)
        self._published = target is not None
        self._inject = host.fault_injector()
        self._sock: socket.socket | None = None
        self._fd = -1
        self._connecting = False      # TCP connect in flight (waiting for WRITABLE)
        self._reading = False         # READABLE registered
        self._writing = False         # WRITABLE registered (unsent output)
        self._wbufs: list[memoryview] = []
        self._turn_us = 0             # now_us of the read event being handled (sends inside it)
        self._out_lock = threading.Lock()
        # the session lock (every protocol call, and foreign deciders): threading.RLock's C type, made
        # without the Python frame of threading.RLock()
        self._lock = _RLock()
        self._out_pending: list[Message] = []
        self._out_posted = False
        self._posted_ns = 0           # when the pending burst was posted to the worker
        self._in_read = False         # inside _on_readable: its _after() writes what we queue
        self._wake_dispatch = False   # an event was queued inside _on_readable: wake at its end
        self._precompute_crcs = msgr.config.ms_crc_header or msgr.config.ms_crc_data
        self._opened = 0
        self._delayed: list[tuple[int, Message]] = []      # (due_us, msg) held back by ms_inject_delay_*
        self._delay_timer: int | None = None
        self._idle_us = int(msgr.config.ms_connection_idle_timeout * 1_000_000)
        self._last_active_us = 0      # last input (ms_connection_idle_timeout)
        self._tick_timer: int | None = None   # the connection tick (see _on_tick) and its deadline
        self._tick_due_us = 0
        self._ready_due_us = 0        # the protocol's CONNECTION_READY timer's deadline (0: none)
        # the bases' made-on-first-use attributes (a slot hides their class-level default)
        self._flushes = None
        self._keepalive_cond = None
        self._keepalive_waiters = 0
        self._overrides = None
        self._perf.msgr_created_connections += 1
        self._perf.msgr_active_connections += 1
        debug.refresh()   # picks up logging levels changed since the last connection

    def __repr__(self) -> str:
        return (f"<AsyncConnection {self._proto.peer_name or '?'} {self.get_peer_addr()} "
                f"{self._proto.state!r} fd={self._fd}>")

    # --- the user-visible Connection ----------------------------------------
    @property
    def peer_type(self) -> int | None:
        t = self._proto.peer_type
        return self._target_type if t is None else t

    @property
    def peer_name(self) -> EntityName | None:
        return self._proto.peer_name

    @property
    def features(self) -> int:
        return self._proto.features

    def get_peer_addr(self) -> EntityAddr | None:
        return self._proto.peer_addr or self._target

    def get_last_keepalive_ack(self) -> float:
        sec, nsec = self._proto.last_keepalive_ack_stamp
        return sec + nsec * 1e-9

    def is_connected(self) -> bool:
        return not self._down and not self._closed and self._proto.is_connected()

    def _session_over(self) -> bool:
        return self._down or self._closed

    def _status(self) -> dict[str, Any]:
        """A snapshot for the admin socket's ``dump_connections`` (any thread; not atomic)."""
        proto = self._proto
        outq = proto.outq
        queued, unacked = len(outq), len(outq.sent)
        return {
            "peer_name": str(proto.peer_name) if proto.peer_name is not None else None,
            "peer_addr": str(self.get_peer_addr()), "state": proto.state.name,
            "connected": self.is_connected(), "lossy": proto.policy.lossy, "worker": self._worker.name,
            "connect_seq": proto.connect_seq, "peer_global_seq": proto.peer_global_seq,
            "in_seq": proto.in_seq, "out_seq": proto.out_seq, "out_queue": queued,
            "sent_unacked": unacked, "inbox": len(self._out_pending), "features": proto.features,
            "faults": self._fault_count, "last_fault": self._last_fault, "marked_down": self._down,
        }

    def send_message(self, msg: Message) -> None:
        """Queue ``msg``; any thread; never blocks on the network.

        On our own worker (a fast-dispatch reply) the message goes to the protocol at once: the
        read handler's write then carries it together with the pending ACK in one ``sendmsg``.
        """
        h = msg.header
        if not h.priority:
            h.priority = self._host.default_send_priority
        if _dbg.messages:
            debug.trace_sent(self, msg)
        if self._center.in_thread():
            if self._in_read and not (self._out_pending or self._down or self._closed):
                # a fast-dispatch reply inside our read handler, which holds the session lock (no
                # second `with`: ~2k instructions) and whose final write carries it with the ACK
                try:
                    acts = self._proto.send_message(msg, self._turn_us)
                    if acts:
                        self._handle(acts)
                except Exception as exc:
                    self._internal_error(exc, "send_message")
                    return None
                perf = self._perf
                perf.msgr_send_messages += 1
                perf.queue_lat_n += 1   # straight to the protocol: no queueing wait
                return None
            with self._lock:
                self._send_here(msg)   # on our worker: straight to the protocol, no posted event
            return None
        if self._precompute_crcs and len(msg.front) + len(msg.middle) + len(msg.data) >= PRECOMPUTE_MIN:
            # big segments: the CRC in this thread, not on the worker (a payload under the threshold in
            # all cannot have a segment over it: no call for the usual small message)
            precompute_crcs(msg)
        if self._down or self._closed:
            self._unsent((msg,))
            return None
        # No lock here (a lock pair is ~900 instructions a message, in the thread that competes for the
        # GIL): an append is atomic, and every taker holds _out_lock and takes a prefix (_take_pending),
        # so an append racing with it stays for the next one. The flag may be read stale: at worst a
        # second flush is posted and finds nothing; never none, as the flush clears it before it takes.
        self._out_pending.append(msg)
        if self._down or self._closed:
            # the session ended meanwhile, perhaps after its end took what was pending: report the rest
            with self._out_lock:
                rest = self._take_pending()
            self._unsent(rest)
            return None
        if self._out_posted:
            return None
        self._out_posted = True
        self._posted_ns = _mono_ns()   # msgr_send_messages_queue_lat: the burst's wait
        self._post(self._flush_pending)
        return None

    def _take_pending(self) -> list[Message]:
        """Under _out_lock: take the messages other threads queued (a prefix: appends go on meanwhile)."""
        pending = self._out_pending
        msgs = pending[:]
        del pending[:len(msgs)]
        return msgs

    def _send_here(self, msg: Message) -> None:
        """send_message on our worker, under the session lock."""
        if self._down or self._closed:
            self._unsent((msg,))
            return
        if self._out_pending:
            self._send_on_worker(msg)   # messages queued from other threads go first
            return
        try:
            acts = self._proto.send_message(msg, self._turn_us if self._in_read else self._now_us())
            if acts:
                self._handle(acts)
            perf = self._perf
            perf.msgr_send_messages += 1
            perf.queue_lat_n += 1   # straight to the protocol: no queueing wait
            if not self._in_read:   # inside our read handler its final write carries this
                self._after()
        except Exception as exc:
            self._internal_error(exc, "send_message")

    def _send_on_worker(self, msg: Message) -> None:
        with self._out_lock:
            if self._down or self._closed:
                self._unsent((msg,))
                return
            # messages queued earlier from other threads go first (order); the posted flush finds none
            msgs = self._take_pending()
            posted_ns = self._posted_ns
        if msgs:
            self._perf.queue_lat(len(msgs), _mono_ns() - posted_ns)
        msgs.append(msg)
        self._perf.queue_lat_n += 1    # this one reaches the protocol at once
        try:
            acts = self._proto.send_messages(msgs, self._now_us())   # one protocol call per burst
            if acts:
                self._handle(acts)
            self._perf.msgr_send_messages += len(msgs)
            if not self._in_read:
                self._after()
        except Exception as exc:
            self._internal_error(exc, "send_message")

    def _unsent(self, msgs: Sequence[Message]) -> None:
        """Messages the session ended before they reached the protocol: reported like its own queue."""
        if not msgs:
            return
        if self._down:  # mark_down / shutdown: the caller ended it (Ceph drops them without a word)
            _log.debug("%r: dropping %d message(s), connection is down", self, len(msgs))
            self._host.note_dropped_unsent(len(msgs))
            return
        _log.warning("%r: session closed before %d message(s) could be queued", self, len(msgs))
        self._host.dispatch_queue.queue_discarded(self, tuple(msgs))

    def send_keepalive(self) -> None:
        """Queue a KEEPALIVE2 (or KEEPALIVE); any thread."""
        if self._down or self._closed:
            return
        self._post(self._keepalive)

    def _keepalive(self) -> None:
        self._perf.msgr_keepalives += 1
        self._call(self._proto.send_keepalive)

    def mark_down(self) -> None:
        """End the session (no reset callback); connect_to hands out a new Connection afterwards."""
        with self._out_lock:
            if self._down:
                return
            self._down = True
            dropped = self._take_pending()   # what a sender appends from now on it drops itself
            if dropped:
                self._host.note_dropped_unsent(len(dropped))
        self._wake_keepalive_waiters()   # no ack can come any more
        # immediate, as Ceph's (the protocol stops under the session lock, in the caller): the session is
        # CLOSED and unregistered when this returns; releasing the socket and timers is posted to the worker.
        # Both under the lock, as Ceph's stop() unregisters: a session that left the map while its worker
        # still ran its handshake would go on talking to the peer beside the one an accept registers
        # meanwhile (its retried connect, with a fresh global_seq, read as a restarted peer: issue 11).
        # Blocking for the lock is safe from the application and from our own worker (reentrant); on
        # another worker (a fast-dispatch callback holding its own session lock) it could close a cycle
        # with an accept deciding on that session, so there the stop is posted (is_connected() is False
        # either way: it reads the down mark) and the worker's next entry into this connection stops it
        if self._lock.acquire(blocking=self._center.in_thread() or not on_worker_thread()):
            try:
                acts = self._proto.mark_down(self._now_us())
                self._host.connection_marked_down(self)
            finally:
                self._lock.release()
            if acts:
                self._post(lambda: self._perform(acts, "mark_down"))
        else:
            self._host.connection_marked_down(self)
            self._post(lambda: self._call(self._proto.mark_down))

    def _is_down(self) -> bool:
        """Marked down by the user or the messenger (never handed out by connect_to again)."""
        return self._down

    def _session_lock(self) -> threading.RLock:
        return self._lock

    # --- posting work to the worker -------------------------------------------
    def _post(self, fn: Callable[[], None], what: str = "") -> None:
        try:
            self._center.dispatch_event_external(fn)
        except Exception as exc:  # the worker is gone (shutdown): nothing left to do
            _log.debug("%r: cannot post to worker: %s", self, exc)

    @_locked
    def _call(self, fn: Callable[..., list[A.Action]], *args: Any) -> None:
        """Run one protocol entry point on the worker and perform what it asks."""
        if self._closed:
            return
        try:
            self._handle(fn(*args, self._now_us()))
            self._after()
        except Exception as exc:
            self._internal_error(exc, getattr(fn, "__name__", "call"))

    @_locked
    def _flush_pending(self) -> None:
        with self._out_lock:
            self._out_posted = False   # before taking: a sender that finds it clear posts again
            msgs = self._take_pending()
            posted_ns = self._posted_ns
        if self._closed:
            self._unsent(msgs)
            return
        if not msgs:
            return
        self._perf.queue_lat(len(msgs), _mono_ns() - posted_ns)
        try:
            acts = self._proto.send_messages(msgs, self._now_us())   # one protocol call per burst
            if acts:
                self._handle(acts)
            self._perf.msgr_send_messages += len(msgs)
            self._after()
        except Exception as exc:
            self._internal_error(exc, "send_message")

    # --- roles (on the worker) ------------------------------------------------
    def _begin_connect(self) -> None:
        """connect_to, before the session is published: the protocol starts here, so whoever finds the
        session in the map sees its peer address and CONNECTING (Ceph's connect() does this under the
        connection's lock); the actions it asks for (timer, TCP connect) are posted to the worker."""
        assert self._target is not None and self._target_type is not None
        acts = self._proto.start_connect(self._target, self._target_type, self._now_us())
        self._post(lambda: self._perform(acts, "start_connect"))

    @_locked
    def _perform(self, acts: list[A.Action], where: str) -> None:
        """On the worker: perform actions a protocol call made elsewhere returned."""
        if self._closed:
            return
        try:
            self._handle(acts)
            self._after()
        except Exception as exc:
            self._internal_error(exc, where)

    @_locked
    def _start_accept(self, sock: socket.socket, peer_sockaddr: tuple[Any, ...],
                      local: EntityAddr | None = None, tuned: bool = False) -> None:
        if self._closed or self._down:  # the messenger was shut down while this accept was queued
            sock.close()
            return
        try:
            peer = EntityAddr.from_sockaddr(peer_sockaddr)   # as accept() gave it: no getpeername
            if local is None:   # the listener is bound to a wildcard address
                local = EntityAddr.from_sockaddr(sock.getsockname())
        except OSError as exc:
            _log.info("accepted socket died at once: %s", exc)
            sock.close()
            self._call(self._proto.mark_down)
            return
        self._install_socket(sock, tuned, tick=False)
        self._inject.internal_delay("accept")
        self._call(self._proto.start_accept, peer, local)
        self._arm_idle()   # after the ready timer: the tick is armed once, for the nearer deadline

    # --- primitives of the connection core (what each action means is in ConnectionCore) ----------
    def _after(self) -> None:
        """After any protocol call: write its output and poll READABLE only if it wants input."""
        if _dbg.states:
            debug.trace_progress(self)
        if self._sock is not None and not self._connecting:
            self._write()   # asks the protocol once (take_output): no has_output() before it
            # a failed write may have reconnected: never poll a socket whose connect is in flight,
            # or the peer's banner would be read (and dropped) before on_connected
            if self._sock is not None and not self._connecting \
                    and self._proto.wants_read != self._reading:
                self._update_read_interest()
        if self._flushes and not self._down:   # marked down: the stop posted here fails them
            self._check_flushes()

    def _socket_open(self) -> bool:
        return self._sock is not None and not self._connecting

    def _open_socket(self, addr: EntityAddr) -> None:
        if self._sock is not None:   # a connect still in flight is abandoned
            self._drop_socket()
        self._opened += 1
        if self._opened > 1:
            self._perf.msgr_reconnects += 1
        try:
            sock = socket.socket(addr.socket_family, socket.SOCK_STREAM)
        except OSError as exc:
            self._socket_error(exc, "socket")
            return
        sock.setblocking(False)
        self._tune(sock)
        self._sock, self._fd = sock, sock.fileno()
        self._connecting = True
        err = sock.connect_ex(addr.sockaddr())
        if err in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._center.create_file_event(self._fd, EVENT_WRITABLE, self._on_connect_ready)
            self._writing = True
        else:
            self._socket_error(OSError(err, errno.errorcode.get(err, str(err))), "connect")

    @_locked
    def _on_connect_ready(self, fd: int, mask: int) -> None:
        sock = self._sock
        if sock is None or fd != self._fd:
            return
        self._center.delete_file_event(fd, EVENT_WRITABLE)
        self._writing = False
        self._connecting = False
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._socket_error(OSError(err, errno.errorcode.get(err, str(err))), "connect")
            return
        try:
            local = EntityAddr.from_sockaddr(sock.getsockname())
        except OSError as exc:
            self._socket_error(exc, "getsockname")
            return
        self._arm_idle()
        self._call(self._proto.on_connected, local)

    # --- the connection tick: ms_connection_ready_timeout and ms_connection_idle_timeout ----------
    # One timer per connection serves both, as Ceph's AsyncConnection::tick does: it is armed for the
    # nearer deadline. The protocol's CONNECTION_READY timer is a deadline on it (_timer_start), and
    # its cancel (the handshake reached OPEN) only clears that deadline: no timer is deleted and
    # created per handshake, the tick fires once at the old deadline and waits for the idle one.
    def _arm_idle(self) -> None:
        """A socket is up: count idleness from now; re-armed lazily by the tick (no timer per read)."""
        now = self._last_active_us = self._now_us()
        if self._idle_us > 0:
            self._arm_tick(now + self._idle_us, now)

    def _arm_tick(self, due_us: int, now: int) -> None:
        """The tick fires at ``due_us`` or earlier."""
        tick = self._tick_timer
        if tick is not None:
            if self._tick_due_us <= due_us:
                return
            self._center.delete_time_event(tick)
        self._tick_due_us = due_us
        self._tick_timer = self._center.create_time_event(due_us - now, self._on_tick)

    @_locked
    def _on_tick(self) -> None:
        self._tick_timer = None
        if self._closed:
            return
        now = self._now_us()
        ready = self._ready_due_us
        if ready and now >= ready:
            self._ready_due_us = 0
            self._perf.msgr_connection_ready_timeouts += 1
            self._on_timer(_CONNECTION_READY)   # may arm the next attempt's deadline
            if self._closed:
                return
            now = self._now_us()
        due = self._ready_due_us
        if self._idle_us > 0 and self._sock is not None and not self._connecting:
            # a session that streamed and went quiet gives its 64 KiB receive buffer back
            self._proto.trim_idle(now)
            if now - self._last_active_us >= self._idle_us:
                self._perf.msgr_connection_idle_timeouts += 1
                self._call(self._proto.on_timer, A.TimerKind.IDLE)
                if self._closed:
                    return
                due = self._ready_due_us   # the fault may have started another attempt
                if self._sock is not None and not self._connecting:
                    self._last_active_us = now
            if self._sock is not None and not self._connecting:
                # input came meanwhile: wait for the rest of the timeout only
                idle_due = self._last_active_us + self._idle_us
                due = idle_due if not due or idle_due < due else due
        if due:   # else re-armed when a socket is up or an attempt starts
            self._arm_tick(due, now)

    def _close_socket(self, reason: str) -> None:
        if self._sock is not None:
            _log.debug("%r: closing socket: %s", self, reason)
            self._drop_socket()

    def _timer_start(self, kind: A.TimerKind, delay_us: int) -> int:
        if kind is _THROTTLE_RETRY:
            self._perf.msgr_throttle_waits += 1
        elif kind is _CONNECTION_READY:   # a deadline on the connection tick
            now = self._now_us()
            due = self._ready_due_us = now + (delay_us if delay_us > 0 else 0)
            self._arm_tick(due, now)
            return _READY_ON_TICK
        handle: int = self._center.create_time_event(delay_us, lambda: self._on_timer(kind))
        return handle

    def _timer_stop(self, handle: int) -> None:
        if handle is _READY_ON_TICK:
            self._ready_due_us = 0   # the tick stays armed: it finds no deadline when it fires
        else:
            self._center.delete_time_event(handle)

    def _faulted(self, reason: str, error: Exception | None, notable: bool = False) -> None:
        self._perf.msgr_faults += 1
        if isinstance(error, WrongNodeError):
            self._perf.msgr_wrong_node += 1
        # the protocol marks bad bytes from the peer and a wrong node as notable, once per cause
        _log.log(logging.WARNING if notable else logging.INFO, "%r: fault: %s", self, reason)

    def _take_handoff(self) -> tuple[socket.socket, list[memoryview]] | None:
        sock = self._sock
        if sock is None:
            return None
        wbufs = self._wbufs
        if self._proto.has_output():   # bytes this connection still owes the peer go first
            wbufs.extend(b if type(b) is memoryview else memoryview(b) for b in self._proto.take_output() if len(b))
        self._detach_socket()
        self._inject.internal_delay("replace")
        return sock, wbufs

    def _claim_handoff(self, handoff: tuple[socket.socket, list[memoryview]]) -> tuple[EntityAddr, EntityAddr] | None:
        sock = handoff[0]
        try:
            return EntityAddr.from_sockaddr(sock.getpeername()), EntityAddr.from_sockaddr(sock.getsockname())
        except OSError as exc:
            _log.info("%r: socket to adopt died: %s", self, exc)
            return None

    def _drop_handoff(self, handoff: tuple[socket.socket, list[memoryview]]) -> None:
        try:
            handoff[0].close()
        except OSError:
            pass

    def _install_handoff(self, handoff: tuple[socket.socket, list[memoryview]]) -> None:
        sock, wbufs = handoff
        self._install_socket(sock)
        self._wbufs[:0] = wbufs

    def _contract_broken(self, text: str) -> None:
        _log.warning("%r: %s", self, text)

    def _registered(self) -> None:
        self._published = True
        self._host.connection_registered(self)

    def _unregister(self, reason: str) -> None:
        _log.debug("%r: session closed: %s", self, reason)
        if self._published:   # else never in the session map under any key: nothing to forget
            self._host.unregister_conn(self._proto)

    @_locked
    def _abandon(self) -> None:
        """The messenger's wait(), on our worker: end whatever is left without telling anyone."""
        self._down = True
        self._finish()
        self._host.unregister_conn(self._proto)

    def _orphan(self) -> None:
        """Our worker is gone (a caller-owned stack stopped under the messenger): close, from any thread."""
        self._drop_socket()
        self._closed = True

    def _released(self) -> None:
        """ConnectionCore._finish closed the socket and the protocol's timers: release the rest."""
        if self._tick_timer is not None:
            self._center.delete_time_event(self._tick_timer)
            self._tick_timer = None
        self._ready_due_us = 0
        if self._delay_timer is not None:
            self._center.delete_time_event(self._delay_timer)
            self._delay_timer = None
        if self._delayed:
            for _due, msg in self._delayed:
                msg._release_throttles()
            self._delayed.clear()
        # each only when there is something to do (no call per session that had nothing). An empty
        # pending list stays ours: a sender appending from now on sees _closed and reports it itself
        if self._out_pending:
            with self._out_lock:
                pending = self._take_pending()
            if pending:
                self._unsent(pending)
        if self._flushes:
            self._fail_flushes()
        if self._keepalive_cond is not None:
            self._wake_keepalive_waiters()
        self._perf.msgr_active_connections -= 1
        self._worker.release()
        self._host.connection_closed(self)
        if not self._published:
            # never in the session map (a stateless server's lossy session): nothing else holds the
            # protocol, so break its reference back to us. The pair is then freed by reference
            # counting when the last outside reference goes, not left as cyclic garbage (with all
            # it holds) to the collector: ~26 objects per accepted session
            self._proto.connection = None

    # --- socket plumbing --------------------------------------------------------
    def _tune(self, sock: socket.socket) -> None:
        tune_socket(sock, self._msgr.config)

    def _install_socket(self, sock: socket.socket, tuned: bool = False, tick: bool = True) -> None:
        sock.setblocking(False)
        if not tuned:   # an accepted socket inherits the listener's options (tune_socket at bind)
            self._tune(sock)
        self._sock, self._fd = sock, sock.fileno()
        self._connecting = False
        self._reading = self._writing = False
        if tick:
            self._arm_idle()

    def _detach_socket(self) -> None:
        """Stop polling the socket and forget it without closing it (it moves to another connection)."""
        if self._fd >= 0:
            self._center.delete_file_event(self._fd, EVENT_READABLE | EVENT_WRITABLE)
        self._sock, self._fd = None, -1
        self._wbufs = []
        self._reading = self._writing = self._connecting = False

    def _drop_socket(self) -> None:
        sock = self._sock
        self._detach_socket()
        if sock is not None:
            try:
                # the fd straight to os.close: socket.close() is two Python frames over the same
                # close(2) (its io-refs bookkeeping is for makefile(), never used on these sockets)
                os.close(sock.detach())
            except OSError:
                pass

    def _update_read_interest(self) -> None:
        want = self._proto.wants_read
        if want and not self._reading:
            self._center.create_file_event(self._fd, EVENT_READABLE, self._on_readable)
            self._reading = True
        elif not want and self._reading:
            self._center.delete_file_event(self._fd, EVENT_READABLE)
            self._reading = False

    def _socket_error(self, exc: OSError, where: str) -> None:
        """The one path for socket failures: drop the socket, tell the protocol."""
        refused = exc.errno == errno.ECONNREFUSED
        self._drop_socket()
        reason = f"{where}: {exc.strerror or exc}"
        try:
            self._handle(self._proto.on_socket_error(reason, self._now_us(), refused))
            self._after()
        except Exception as err:
            self._internal_error(err, "on_socket_error")

    def _internal_error(self, exc: Exception, where: str) -> None:
        """A bug or a misbehaving callback: fault this connection only, keep the worker alive."""
        if isinstance(exc, MsgrError):
            _log.warning("%r: %s failed: %s", self, where, exc)
        else:
            _log.exception("%r: unexpected error in %s", self, where)
        self._last_fault = f"{where}: {type(exc).__name__}: {exc}"
        if self._closed:
            return
        self._drop_socket()
        try:
            self._handle(self._proto.on_socket_error(self._last_fault, self._now_us()))
            self._after()
        except Exception:
            _log.exception("%r: protocol failed to handle a fault; closing the session", self)
            self._finish()
            self._host.unregister_conn(self._proto)

    # --- reading -------------------------------------------------------------------
    #: the common read event in one frame (below); False: always the general paths (tests compare)
    _fused = True

    def _on_readable(self, fd: int, mask: int) -> None:
        """READABLE: receive, decode, dispatch and write the replies with the ACK in one ``send``.

        The common event runs in this one frame, from the read to the framed reply: one message
        delivered by the protocol, the usual dispatcher chain (``sole_fast``), a named peer, no
        debug trace, fault injection or held-back delivery, no output left unwritten, one buffer
        to send. Its dispatch is ``_dispatch_all``'s and its write ``_after``'s, inlined;
        everything else goes down those general paths (tests/test_fused_read.py runs the same
        traffic both ways and compares what the dispatchers, the peer and the counters see).

        Clock: the event starts at the loop's reading (``EventCenter.now_ns``: taken as the poll
        returned, or the end of the callback before this one), so it reads the clock only where a
        span ends: before and after fast dispatch (the latter is also where the write starts) and
        after the write, which it leaves in ``now_ns`` for the next callback and the loop's timers.
        """
        # the session lock as @_locked takes it, inline: one Python frame less per read event
        with self._lock:
            sock = self._sock
            if sock is None or fd != self._fd or self._connecting:
                return
            if self._down:   # marked down from another worker, its stop still posted: it never reads again
                self._call(self._proto.mark_down)
                return
            proto = self._proto
            perf = self._perf
            inject = self._inject
            t0 = self._center.now_ns   # no clock read of its own to start the event
            # one protocol time per event: replies sent from fast dispatch inside it reuse it too
            now = self._turn_us = self._last_active_us = t0 // 1000 if self._mono_clock else self._now_us()
            # the usual case's switches, read once per event: a debug trace (messages is the lowest
            # level that traces anything), fault injection, the general action performer
            plain = self._fused and not (_dbg.messages or inject.socket_failures or inject.delay_types) \
                and self._overrides is None
            fast_ns = te = 0
            self._in_read = True
            try:
                for _ in range(READ_ROUNDS):
                    if inject.socket_failures and inject.maybe_fail_socket(sock, "read"):
                        perf.msgr_injected_failures += 1
                    buf = proto.get_buffer()
                    try:
                        n = sock.recv_into(buf)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        self._in_read = False
                        self._socket_error(exc, "read")
                        return
                    perf.msgr_recv_calls += 1
                    perf.msgr_recv_bytes += n
                    te = 0
                    acts = proto.buffer_updated(n, now)
                    if acts:
                        msgs = acts[0]
                        if plain and len(acts) == 1 and type(msgs) is _Deliver and len(msgs) == 1 \
                                and not self._delayed:
                            d = self._host.dispatchers.sole_fast
                            name = proto.peer_name
                            if d is not None and name is not None and name.num != _NEW:
                                # _handle -> _dispatch_all of one message to the usual chain, inlined
                                msg = msgs[0]
                                perf.msgr_recv_messages += 1
                                if d.ms_can_fast_dispatch(msg):
                                    td = _mono_ns()
                                    try:
                                        d.ms_fast_dispatch(msg)
                                    finally:
                                        release_throttles((msg,))   # C with msgr._hotcall
                                        perf.msgr_fast_dispatched += 1
                                        te = _mono_ns()   # also the start of the write, if next
                                        fast_ns += te - td
                                else:
                                    self._host.dispatch_queue.enqueue(msg)
                            else:
                                self._handle(acts)
                        else:
                            self._handle(acts)
                    if n == 0:
                        if self._sock is sock:  # EOF: a level-triggered fd would fire forever
                            self._drop_socket()
                        break
                    if self._sock is not sock or n < len(buf) or not proto.wants_read:
                        break
                self._in_read = False
                if plain and self._sock is sock and not self._wbufs and not self._connecting:
                    # _after -> _write's usual case, inlined: one buffer (the replies and the ACK)
                    tw = te or _mono_ns()   # the write starts where the last fast dispatch ended
                    perf.recv_ns += tw - t0 - fast_ns
                    out = proto.take_output()
                    if out:
                        if len(out) == 1:
                            b = out[0]
                            try:
                                k = sock.send(b)
                            except (BlockingIOError, InterruptedError):
                                perf.msgr_eagain += 1
                                self._keep_unwritten(out, 0)
                            except OSError as exc:
                                self._socket_error(exc, "write")   # the fault path owns the socket now
                            else:
                                perf.msgr_send_calls += 1
                                perf.msgr_send_bytes += k
                                if k < len(b):
                                    self._keep_unwritten(out, k)
                        else:   # several buffers: the writer's general path
                            self._wbufs.extend(memoryview(b) for b in out if len(b))
                            self._write()
                    elif self._writing:
                        self._center.delete_file_event(self._fd, EVENT_WRITABLE)
                        self._writing = False
                    if self._sock is not None and not self._connecting \
                            and proto.wants_read != self._reading:
                        self._update_read_interest()
                    if self._flushes and not self._down:
                        self._check_flushes()
                    t1 = self._center.now_ns = _mono_ns()
                    perf.send_ns += t1 - tw
                    perf.fast_ns += fast_ns
                    perf.total_ns += t1 - t0
                    return
                t1 = self._center.now_ns = _mono_ns()   # the loop's latest reading (see EventCenter.now_ns)
                dt = t1 - t0
                perf.recv_ns += dt - fast_ns
                perf.fast_ns += fast_ns
                perf.total_ns += dt
                self._after()   # the replies and the ACK of this batch leave in one sendmsg
            except Exception as exc:
                self._in_read = False
                self._internal_error(exc, "read")
            finally:
                if self._wake_dispatch:
                    self._wake_dispatch = False
                    self._host.dispatch_queue.wake()
                if self._keepalive_waiters:   # someone waits in wait_keepalive_ack: it rechecks the stamp
                    self._wake_keepalive_waiters()

    @_locked
    def _on_writable(self, fd: int, mask: int) -> None:
        if self._sock is None or fd != self._fd:
            return
        try:
            self._write()
            if self._flushes and not self._down:
                self._check_flushes()
        except Exception as exc:
            self._internal_error(exc, "write")


if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_host import MessengerConnection

    def _implements_the_interface(conn: AsyncConnection) -> MessengerConnection:
        return conn   # mypy checks AsyncConnection against MessengerConnection (and SessionControl)
