"""Session life: sending, faults (PROTOCOL.md §9.3), session resets, reconnects, replace, close.

``_fault`` is the one place a broken socket or bad input ends up; it follows
Ceph's ProtocolV1::fault order: lossy -> close with a reset callback;
otherwise requeue the sent list, then a half-accepted connection with
nothing to send just closes, an idle standby-policy session goes to
STANDBY, a fault during the handshake (or after WAIT) reconnects after a
backoff, and a fault of an open session reconnects at once with
connect_seq + 1 (a server policy waits in STANDBY for the peer instead).

ms_connection_ready_timeout (as Ceph's connection tick): every connect
attempt, accepted socket and adopted socket arms a CONNECTION_READY timer;
reaching OPEN cancels it; if it fires first, the attempt faults (a client
backs off and retries, a half-accepted connection closes).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

from msgr.entity import EntityAddr
from msgr.features import MSG_AUTH
from msgr.message import Message
from msgr.protocol.actions import (
    Action,
    ArmTimer,
    CancelTimer,
    CloseSocket,
    ConnEvent,
    Discarded,
    Fault,
    Notify,
    SessionClosed,
    TimerKind,
)
from msgr.protocol.base import BLOCKED, Blocked, ProtocolBase
from msgr.protocol.states import ACCEPTING_STATES, CONNECTING_STATES
from msgr.protocol.states import States as S
from msgr.wire import ConnectReply, Priority, Tag, proto_version

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1

_SEQ_MASK = 0x7FFFFFFF
# states the per-message send path tests, as module constants: on Python 3.11 an Enum class
# attribute costs a metaclass __getattr__ hook (~0.25 us) per read
_CLOSED, _STANDBY, _DEFAULT_PRIO = S.CLOSED, S.STANDBY, Priority.DEFAULT
_READY_TIMER = TimerKind.CONNECTION_READY
# actions every session emits with the same argument: one shared instance each (actions are frozen)
_CANCEL_READY, _CANCEL_RECONNECT = CancelTimer(_READY_TIMER), CancelTimer(TimerKind.RECONNECT)
# the ready timer's ArmTimer for the last timeout armed, shared likewise: building a frozen
# dataclass costs ~0.3 us per attempt
_arm_ready = [ArmTimer(_READY_TIMER, 0)]
_NOTIFY_BAD_RESET = Notify(ConnEvent.BAD_RESET)
_EARLY_CONNECT = frozenset({S.CONNECTING, S.CONNECTING_RE})
# where PROTOCOL.md §9.3 step 4 (half-accepted, nothing queued: just close) applies: as Ceph, up to the connect
# message only; once the success reply is out the peer holds the session (connect_seq + 1) and a
# fault must keep it, or the peer's reconnect meets RESETSESSION and both queues are discarded
_HALF_ACCEPTED = ACCEPTING_STATES - {S.ACCEPTING_WAIT_SEQ, S.ACCEPTING_READY}


class SessionMixin(ProtocolBase):
    """Session-level behaviour of :class:`~msgr.protocol.protocol_v1.ProtocolV1`."""

    @staticmethod
    def _blocked() -> Blocked:
        return BLOCKED

    # --- sending ---------------------------------------------------------------------------------------
    def send_message(self, msg: Message, now_us: int) -> list[Action]:
        """Queue ``msg`` by priority; from STANDBY (client side) this starts a reconnect."""
        if self.state is _CLOSED:
            return [Discarded((msg,))]
        h = msg.header
        if not h.priority:
            h.priority = _DEFAULT_PRIO
        h.seq = 0  # never sent in this session: discard_requeued_up_to stops at it
        self._outq.enqueue(msg)
        if self.state is _STANDBY:   # else no call: this runs once per message sent
            return self._wake_from_standby(now_us)
        return []

    def send_messages(self, msgs: list[Message], now_us: int) -> list[Action]:
        """:meth:`send_message` for a burst, in order (one state check, one queue pass)."""
        if self.state is S.CLOSED:
            return [Discarded(tuple(msgs))]
        q = self._outq
        prio, fifo = -1, None       # a burst usually has one priority: one queue lookup
        for msg in msgs:            # what send_message does to each, and enqueue, in one pass
            h = msg.header
            p = h.priority
            if not p:
                p = h.priority = _DEFAULT_PRIO
            h.seq = 0
            if p != prio:
                fifo, prio = q.queue_for(p), p
            assert fifo is not None
            fifo.append(msg)
        q.count += len(msgs)
        return self._wake_from_standby(now_us)

    def send_keepalive(self, now_us: int) -> list[Action]:
        """KEEPALIVE2 (or KEEPALIVE without MSGR_KEEPALIVE2) at the next write."""
        if self.state is S.CLOSED:
            return []
        self._keepalive_pending = True
        return self._wake_from_standby(now_us)

    def _wake_from_standby(self, now_us: int) -> list[Action]:
        if self.state is S.STANDBY and not self.policy.server:
            self.stats["reconnects"] += 1
            return self._connect_now(now_us)
        return []

    # --- faults -----------------------------------------------------------------------------------------
    def on_socket_error(self, reason: str, now_us: int, refused: bool = False) -> list[Action]:
        """The socket failed (connect refused, reset, EOF): the usual fault path."""
        if self.state is S.CLOSED or not (self._has_socket or self.state is S.CONNECTING):
            return []
        acts: list[Action] = [Notify(ConnEvent.CONN_REFUSED)] if refused else []
        return acts + self._fault(reason, now_us)

    # --- ms_connection_ready_timeout ---------------------------------------------------------------------
    def _arm_ready_timer(self, now_us: int, acts: list[Action]) -> None:
        """A connect/accept/adopt attempt starts: it must reach OPEN within ms_connection_ready_timeout."""
        timeout_us = int(self.host.config.ms_connection_ready_timeout * 1e6)
        if timeout_us > 0:
            self._ready_since_us = now_us
            self._ready_armed = True
            arm = _arm_ready[0]
            if arm.delay_us != timeout_us:   # the configured timeout changed (or the first session)
                arm = _arm_ready[0] = ArmTimer(_READY_TIMER, timeout_us)
            acts.append(arm)

    def _cancel_ready_timer(self, acts: list[Action]) -> None:
        if self._ready_armed:
            self._ready_armed = False
            acts.append(_CANCEL_READY)

    def _on_ready_timer(self, now_us: int) -> list[Action]:
        if not self._ready_armed or self.state is S.CLOSED or self.is_connected():
            return []
        if not self._has_socket and (self.state is not S.CONNECTING or self._reconnect_armed):
            return []   # no attempt in flight (standby, backoff): nothing to time out
        timeout_us = int(self.host.config.ms_connection_ready_timeout * 1e6)
        left = self._ready_since_us + timeout_us - now_us
        if left > 0:   # an early tick (coarse owner clock): wait for the rest
            return [ArmTimer(TimerKind.CONNECTION_READY, left)]
        self._ready_armed = False
        acts: list[Action] = []
        if self.state is S.CONNECTING and not self._has_socket:
            acts.append(CloseSocket("TCP connect did not complete"))   # abandon the connect in flight
        return acts + self._fault(f"not ready after ms_connection_ready_timeout "
                                  f"({timeout_us / 1e6:g} s) in {self.state.name}", now_us)

    def _drop_socket(self, reason: str, acts: list[Action]) -> None:
        self._release_partial()
        self._reset_recv()
        self._out = []
        if self._has_socket:
            self._has_socket = False
            acts.append(CloseSocket(reason))
        if not self.wants_read:
            self.wants_read = True
            acts.append(CancelTimer(TimerKind.THROTTLE_RETRY))

    def _fault(self, reason: str, now_us: int, error: Exception | None = None) -> list[Action]:
        st = self.state
        if st is S.CLOSED:
            return []
        self.stats["faults"] += 1
        acts: list[Action] = [Fault(reason, error, self._notable_fault(reason, error))]
        self._drop_socket(reason, acts)
        self._cancel_ready_timer(acts)   # re-armed by the next attempt
        if self.policy.lossy and st not in _EARLY_CONNECT:
            return self._close(reason, now_us, reset=True, acts=acts)
        # "reset from peer" (row 14) belongs to the one replace that set it: if that attempt dies before
        # open() answers READY, the flag must not survive into a later, ordinary open() of this session,
        # which would answer READY, zero in_seq and take the peer's requeued messages a second time
        # (Ceph's fault() clears is_reset_from_peer here too)
        self._reset_from_peer = False
        self._outq.requeue_sent()
        queued = len(self._outq) > 0
        if not self._once_ready and not queued and st in _HALF_ACCEPTED and not self._replacing:
            return acts + self._close(reason, now_us, reset=False)   # half-accepted: just close
        self._replacing = False
        if self.policy.standby and not queued and not self._keepalive_pending and st is not S.WAIT:
            self._to(S.STANDBY)
            return acts
        if st not in CONNECTING_STATES and st is not S.WAIT:
            if self.policy.server:
                self._to(S.STANDBY)   # the peer reconnects to us
                return acts
            self.connect_seq += 1
            self._backoff_us = 0
            self.stats["reconnects"] += 1
            return acts + self._connect_now(now_us)
        cfg = self.host.config
        max_us = int(cfg.ms_max_backoff * 1e6)
        if st is S.WAIT:
            self._backoff_us = max_us
        elif self._backoff_us == 0:
            self._backoff_us = int(cfg.ms_initial_backoff * 1e6)
        else:
            self._backoff_us = min(2 * self._backoff_us, max_us)
        self._to(S.CONNECTING)
        self._reconnect_armed = True
        acts.append(ArmTimer(TimerKind.RECONNECT, self._backoff_us))
        return acts

    def _on_reconnect_timer(self, now_us: int) -> list[Action]:
        if self.state is not S.CONNECTING or not getattr(self, "_reconnect_armed", False):
            return []
        self._reconnect_armed = False
        self.stats["reconnects"] += 1
        return self._connect_now(now_us)

    def _close(self, reason: str, now_us: int, reset: bool, acts: list[Action] | None = None) -> list[Action]:
        """End the session: CLOSED, queues reported as Discarded, unregistered. ``acts``: a fault's
        actions, which already dropped the socket and the ready timer (the close's are added to them)."""
        if acts is None:
            acts = []
            self._drop_socket(reason, acts)
            acts.append(_CANCEL_RECONNECT)
            self._cancel_ready_timer(acts)
        else:
            acts.append(_CANCEL_RECONNECT)
        self._reconnect_armed = False
        dropped = self._outq.clear()
        if dropped:
            acts.append(Discarded(tuple(dropped)))
        self._keepalive_pending = False
        self.state = S.CLOSED   # always allowed (ALWAYS); set directly so a close never raises
        if self._was_registered:
            self.host.unregister_conn(cast("ProtocolV1", self))
        if reset:
            acts.append(_NOTIFY_BAD_RESET)
        acts.append(SessionClosed(reason))
        return acts

    def _reset_session(self) -> list[Action]:
        """The peer has no session for us (or restarted): drop queues and seqs, tell the application."""
        acts: list[Action] = []
        dropped = self._outq.clear()
        if dropped:
            acts.append(Discarded(tuple(dropped)))
        acts.append(Notify(ConnEvent.BAD_REMOTE_RESET))
        q = self._outq
        q.out_seq = self.host.rng.getrandbits(31) & _SEQ_MASK if self.features & MSG_AUTH else 0
        self.in_seq = 0
        self._acked_seq = 0
        self.connect_seq = 0
        self._once_ready = False
        self._keepalive_pending = False
        return acts

    # --- control ------------------------------------------------------------------------------------------
    def mark_down(self, now_us: int) -> list[Action]:
        """End the session now: CloseSocket + SessionClosed, no reset callback."""
        if self.state is S.CLOSED:
            return []
        return self._close("marked down", now_us, reset=False)

    def fault_replaced(self, now_us: int) -> list[Action]:
        """StopExisting: a lossy session replaced by a new connection from its peer (reset callback)."""
        if self.state is S.CLOSED:
            return []
        return self._close("replaced by a new connection from the peer", now_us, reset=True)

    def adopt_socket(self, sock_peer: EntityAddr, sock_local: EntityAddr, now_us: int,
                     reset_session: bool) -> list[Action]:
        """Lossless replace (PROTOCOL.md §7.1): take over an accepted socket, answer RETRY_GLOBAL."""
        if self.state is S.CLOSED:
            return [CloseSocket("replace target is closed")]
        acts: list[Action] = []
        self._drop_socket("replaced by an incoming connection", acts)   # the old socket, at once
        acts.append(CancelTimer(TimerKind.RECONNECT))
        self._reconnect_armed = False
        self._outq.requeue_sent()
        if reset_session:
            self._reset_from_peer = True
            if self.policy.resetcheck:
                acts.extend(self._reset_session())
        self._has_socket = True
        self._sock_peer, self._sock_local = sock_peer, sock_local
        self._authorizer_in = b""
        self._auth_server_challenge = None   # a new socket: any cephx challenge starts over
        self._replacing = True
        self._arm_ready_timer(now_us, acts)   # as Ceph: the replace restarts the connection tick
        self.stats["reconnects"] += 1
        c = self._replace_connect
        host = self.host
        peer_type = c.host_type if c is not None else self.peer_type
        feats = (c.features & self.policy.features_supported) | self.policy.features_required if c else 0
        self._out.append(ConnectReply(Tag.RETRY_GLOBAL, feats, self.peer_global_seq, 0,
                                      proto_version(host.my_name.type, peer_type, False), 0, 0).pack())
        self._to(S.ACCEPTING_WAIT_CONNECT_MSG)
        return acts

    def adopt_failed(self, reason: str, now_us: int, reset_session: bool = False) -> list[Action]:
        """ReplaceExisting's socket died before ``adopt_socket`` could run on it.

        Ceph moves the socket into the existing session whatever its state (shutting that session's own
        socket down) and then faults on it. The owner calls this instead when the socket cannot be
        adopted: the same fault follows, and the session is no longer marked as being replaced (or
        every later connect from the peer would get RETRY_GLOBAL, row 11, until its own backoff).
        """
        if self.state is S.CLOSED or not self._replacing:
            return []
        acts: list[Action] = []
        if self.state is S.CONNECTING and not self._has_socket and not self._reconnect_armed:
            acts.append(CloseSocket("replaced by an incoming connection"))   # a TCP connect in flight
        self._drop_socket("replaced by an incoming connection", acts)
        acts.append(CancelTimer(TimerKind.RECONNECT))
        self._reconnect_armed = False
        if reset_session and self.policy.resetcheck:
            acts.extend(self._reset_session())   # row 14 resets E when it decides; no reset-from-peer
            # mark: the fault below would clear it (it belongs to this replace's open() only)
        self._to(S.ACCEPTING_WAIT_CONNECT_MSG)
        return acts + self._fault(reason, now_us)
