"""One connection core: what each protocol action means, written once for every transport.

A sans-IO :class:`~msgr.protocol.protocol_v1.ProtocolV1` returns actions
(``msgr/protocol/actions.py``). :class:`ConnectionCore` says what each one
means; a transport (``AsyncConnection`` on sockets and workers, the
simulator's ``SimConnection``, the wire pair's ``WireConn``) subclasses it and
supplies only its primitives: open, close and hand over a socket, start and
stop a timer, post a call to this connection's worker, run a protocol entry
point, dispatch a message, and so on. So the three performers cannot disagree,
and a fix lands once.

The meanings, as Ceph's AsyncConnection/ProtocolV1 have them:

- ``OpenSocket``: start a TCP connect. An established socket must not be open
  (an owner-contract break: reported, then the socket is closed first).
- ``CloseSocket``: close the socket, and abandon a connect in flight.
- ``ArmTimer`` / ``CancelTimer``: one timer per kind; arming replaces it.
- ``Deliver``: a v1 handshake carries no entity number, so the first message
  with one names the peer; then the messages go to the dispatchers, in order.
- ``Notify``: the dispatchers hear of it (``ms_handle_*``).
- ``Fault``: counted and kept as ``last_fault`` / ``last_fault_error``; the
  state change is done.
- ``Discarded``: the application is told (``ms_handle_discarded``).
- ``ReplaceExisting``: the accepted socket, with the bytes this connection
  still owes the peer, is handed to the existing session, which adopts it on
  its own worker (``adopt_socket``; ``adopt_failed`` if the socket died on the
  way); this connection is finished.
- ``PokeExisting``: the existing session sends a keepalive, on its worker,
  even when it is marked down (only a closed one ignores it).
- ``StopExisting``: Ceph's replace() of a lossy session, ``stop()`` plus a
  reset callback, whatever the session's state (``fault_replaced``). A socket
  error is not the same: a lossy fault during a connect does not close, and
  the session, already unregistered, would go on as a second session.
- ``Registered``: the messenger's hook.
- ``SessionClosed``: finish (socket, timers, everything the transport holds),
  then the messenger forgets the connection.

Threads: every ``_do_*`` runs on the connection's worker (inside ``_handle``);
the calls on *another* session (``hand_over``, ``poke``, ``stop_replaced``)
return at once and post their work to that session's worker.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgr import debug
from msgr.entity import EntityAddr, EntityName
from msgr.protocol import actions as A

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message
    from msgr.protocol.protocol_v1 import ProtocolV1

__all__ = ["ConnectionCore"]

_NEW = EntityName.NEW
_Deliver = A.Deliver
_dbg = debug.gate   # debug_ms level 20: every action list is logged


class ConnectionCore:
    """The shared half of a connection; subclasses supply the primitives listed below."""

    _proto: ProtocolV1          # the protocol machine this connection owns
    _closed: bool               # finished: the session is over or this connection was replaced
    _down: bool                # marked down by the user or the messenger
    _timers: dict[A.TimerKind, Any]
    _last_fault: str | None
    _last_fault_error: Exception | None   # e.g. BadBannerError: a non-Ceph peer
    _fault_count: int
    _overrides: dict[type, Callable[[Any], None]] | None = None

    def _init_core(self) -> None:
        self._closed = False
        self._down = False
        self._timers = {}
        self._last_fault = None
        self._last_fault_error = None
        self._fault_count = 0

    # --- primitives: each transport supplies these ---------------------------------------------------------
    def _post(self, fn: Callable[[], None], what: str = "") -> None:
        """Run ``fn`` on this connection's worker, after what is queued there (``what`` names it in traces)."""
        raise NotImplementedError

    def _call(self, fn: Callable[..., list[A.Action]], *args: Any) -> None:
        """On the worker: run the protocol entry point ``fn(*args, now_us)``, perform its actions and
        write its output; nothing once the connection is closed."""
        raise NotImplementedError

    def _socket_open(self) -> bool:
        """An established socket is attached (a connect in flight does not count)."""
        raise NotImplementedError

    def _open_socket(self, addr: EntityAddr) -> None:
        """Start a non-blocking connect; report ``on_connected`` / ``on_socket_error`` later."""
        raise NotImplementedError

    def _close_socket(self, reason: str) -> None:
        """Close the socket (pending output is dropped) and abandon a connect in flight; no-op if none."""
        raise NotImplementedError

    def _timer_start(self, kind: A.TimerKind, delay_us: int) -> Any:
        """Call ``self._on_timer(kind)`` after ``delay_us``; returns a handle for ``_timer_stop``."""
        raise NotImplementedError

    def _timer_stop(self, handle: Any) -> None:
        raise NotImplementedError

    def _dispatch(self, msg: Any) -> None:
        """Hand a delivered message to the dispatchers (fast or queued)."""
        raise NotImplementedError

    def _dispatch_all(self, msgs: list[Any]) -> None:
        """Hand one receive call's messages to the dispatchers, in order (a transport may hoist
        its per-message bookkeeping out of the loop)."""
        for msg in msgs:
            self._dispatch(msg)

    def _notify(self, event: A.ConnEvent) -> None:
        raise NotImplementedError

    def _faulted(self, reason: str, error: Exception | None, notable: bool = False) -> None:
        """Log and count a fault (``notable``: worth a WARNING, see Fault.notable)."""
        raise NotImplementedError

    def _report_discarded(self, msgs: tuple[Message, ...]) -> None:
        raise NotImplementedError

    def _take_handoff(self) -> Any:
        """Detach the socket for a replace, with the output this connection still owes the peer first
        in line; None if there is no socket."""
        raise NotImplementedError

    def _claim_handoff(self, handoff: Any) -> tuple[EntityAddr, EntityAddr] | None:
        """On the adopting worker: (peer, local) of the handed-over socket, or None if it died."""
        raise NotImplementedError

    def _drop_handoff(self, handoff: Any) -> None:
        """Close a handed-over socket that will not be adopted."""
        raise NotImplementedError

    def _install_handoff(self, handoff: Any) -> None:
        """Make the handed-over socket (and its pending output) this connection's socket."""
        raise NotImplementedError

    def _contract_broken(self, text: str) -> None:
        """The protocol asked for something its contract rules out."""
        raise NotImplementedError

    def _registered(self) -> None:
        raise NotImplementedError

    def _released(self) -> None:
        """The transport's part of finishing: everything else it holds (worker, queues, the messenger's
        list of connections)."""
        raise NotImplementedError

    def _unregister(self, reason: str) -> None:
        """The session ended: the messenger forgets it."""
        raise NotImplementedError

    # --- performing ----------------------------------------------------------------------------------
    @property
    def _handlers(self) -> dict[type, Callable[[Any], None]]:
        """The action handlers of this connection, bound; a test may replace one in this dict.

        Built on first use only: ``_handle`` calls the class-level table (no dict of bound methods per
        connection, which cost ~2 KiB each on an idle connection)."""
        if self._overrides is None:
            self._overrides = {t: getattr(self, f.__name__) for t, f in _PERFORM.items()}
        return self._overrides

    def _handle(self, actions: list[A.Action]) -> None:
        if _dbg.actions:
            debug.trace_actions(self, actions)
        ov = self._overrides
        if ov is None:
            for act in actions:
                if type(act) is _Deliver:   # the per-read action: no table lookup
                    name = self._proto.peer_name
                    if name is not None and name.num != _NEW:
                        self._dispatch_all(act)   # _do_deliver's usual case, one call less (the action is its list)
                    else:
                        self._do_deliver(act)
                else:
                    _PERFORM[type(act)](self, act)
        else:
            for act in actions:
                ov[type(act)](act)

    def _do_open_socket(self, act: A.OpenSocket) -> None:
        if self._socket_open():
            self._contract_broken(f"OpenSocket while a socket is open in {self._proto.state!r}")
            self._close_socket("OpenSocket over an open socket")
        self._open_socket(act.addr)

    def _do_close_socket(self, act: A.CloseSocket) -> None:
        self._close_socket(act.reason)

    def _do_arm_timer(self, act: A.ArmTimer) -> None:
        kind = act.kind
        old = self._timers.pop(kind, None)
        if old is not None:
            self._timer_stop(old)
        self._timers[kind] = self._timer_start(kind, act.delay_us)

    def _do_cancel_timer(self, act: A.CancelTimer) -> None:
        handle = self._timers.pop(act.kind, None)
        if handle is not None:
            self._timer_stop(handle)

    def _on_timer(self, kind: A.TimerKind) -> None:
        """A timer fired (on the worker)."""
        self._timers.pop(kind, None)
        if self._down:   # marked down, its stop still posted (from another worker): no reconnect, no retry
            self._call(self._proto.mark_down)
            return
        self._call(self._proto.on_timer, kind)

    def _do_deliver(self, act: A.Deliver) -> None:
        msgs = act.msgs
        proto = self._proto
        name = proto.peer_name
        if name is not None and name.num == _NEW:
            # v1 carries no entity number in the handshake: take it from the peer's first message
            # that has one (each message is dispatched under the name known when it arrived)
            for i, msg in enumerate(msgs):
                h = msg.header
                if h.src_type == name.type and h.src_num != _NEW:
                    proto.peer_name = EntityName(name.type, h.src_num, name.id)
                    self._dispatch_all(msgs[i:])
                    return
                self._dispatch(msg)
            return
        self._dispatch_all(msgs)

    def _do_notify(self, act: A.Notify) -> None:
        self._notify(act.event)

    def _do_fault(self, act: A.Fault) -> None:
        self._last_fault, self._last_fault_error = act.reason, act.error
        self._fault_count += 1
        self._faulted(act.reason, act.error, act.notable)

    def _do_discarded(self, act: A.Discarded) -> None:
        self._report_discarded(act.messages)

    def _do_replace_existing(self, act: A.ReplaceExisting) -> None:
        handoff = self._take_handoff()
        act.existing.connection._hand_over(handoff, act.reset_session)
        self._finish()

    def _do_poke_existing(self, act: A.PokeExisting) -> None:
        act.existing.connection._poke()

    def _do_stop_existing(self, act: A.StopExisting) -> None:
        act.existing.connection._stop_replaced("replaced by a new connection from the peer")

    def _do_registered(self, act: A.Registered) -> None:
        self._registered()

    def _do_session_closed(self, act: A.SessionClosed) -> None:
        self._finish()
        self._unregister(act.reason)

    # --- what another session of the messenger asks of this one (returns at once) -------------------------
    def _hand_over(self, handoff: Any, reset_session: bool) -> None:
        """Lossless replace: adopt the accepted socket ``handoff`` on this session's worker."""
        self._post(lambda: self._adopt(handoff, reset_session), "adopt")

    def _poke(self) -> None:
        """Lost race (WAIT): send a keepalive so this session's own connect completes."""
        self._post(lambda: self._call(self._proto.send_keepalive), "poke")

    def _stop_replaced(self, reason: str) -> None:
        """Lossy replace: the session stops, with a reset callback (Ceph: stop() + queue_reset), whatever
        its state; ``reason`` names the post in traces (the protocol states its own)."""
        self._post(lambda: self._call(self._proto.fault_replaced), f"stop ({reason})")

    def _adopt(self, handoff: Any, reset: bool) -> None:
        ends = self._claim_handoff(handoff) if handoff is not None else None
        if ends is None:
            # as Ceph (the dead socket is moved in, then faults): the session stops being "replaced"
            if handoff is not None:
                self._drop_handoff(handoff)
            self._call(lambda now: self._proto.adopt_failed("the socket to adopt died", now, reset))
            return
        if self._closed:
            self._drop_handoff(handoff)
            return
        peer, local = ends

        def adopt(now_us: int) -> list[A.Action]:
            # the actions may close our old socket, so the new one is installed only afterwards; whatever
            # socket we had goes, a connect in flight included (adopt_socket emits no CloseSocket for it)
            self._handle(self._proto.adopt_socket(peer, local, now_us, reset))
            self._close_socket("replaced by an incoming connection")
            self._install_handoff(handoff)
            return []
        self._call(adopt)

    def _finish(self) -> None:
        """This connection is dead: no socket, no timers, nothing held."""
        if self._closed:
            return
        self._closed = True
        self._close_socket("connection finished")
        for handle in self._timers.values():
            self._timer_stop(handle)
        self._timers.clear()
        self._released()


# action type -> meaning; ConnectionCore._handle calls these unbound (see its _handlers property)
_PERFORM: dict[type, Callable[[Any, Any], None]] = {
    A.OpenSocket: ConnectionCore._do_open_socket, A.CloseSocket: ConnectionCore._do_close_socket,
    A.ArmTimer: ConnectionCore._do_arm_timer, A.CancelTimer: ConnectionCore._do_cancel_timer,
    A.Deliver: ConnectionCore._do_deliver, A.Notify: ConnectionCore._do_notify,
    A.Fault: ConnectionCore._do_fault, A.Discarded: ConnectionCore._do_discarded,
    A.ReplaceExisting: ConnectionCore._do_replace_existing,
    A.PokeExisting: ConnectionCore._do_poke_existing, A.StopExisting: ConnectionCore._do_stop_existing,
    A.Registered: ConnectionCore._do_registered, A.SessionClosed: ConnectionCore._do_session_closed,
}
