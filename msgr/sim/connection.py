"""SimConnection: the simulator's transport under the shared connection core.

It plays ``AsyncConnection`` over a :class:`~msgr.sim.network.SimNetwork`:
what each protocol action means comes from
:class:`~msgr.connection_core.ConnectionCore`; this module supplies only the
primitives (simulated sockets and connects, simulated timers, posting to a
simulated worker, recording what the application would see).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgr.connection_core import ConnectionCore
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError
from msgr.message import Message
from msgr.protocol import actions as A
from msgr.sim.worker import SimWorker, pick_worker

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1
    from msgr.sim.endpoint import SimEndpoint
    from msgr.sim.network import SimEvent, SimSocketEnd

__all__ = ["SimConnection"]


class SimConnection(ConnectionCore):
    """The owner of one ProtocolV1 (the user-visible Connection of the session)."""

    def __init__(self, ep: SimEndpoint, target: EntityAddr | None = None, target_type: int | None = None) -> None:
        self._init_core()
        self.ep = ep
        self.net = ep.net
        self.uid = ep.net.next_uid()
        self.target, self.target_type = target, target_type
        self.sock: SimSocketEnd | None = None
        self._connect_token = 0
        self._token_seq = 0
        self._pump_ev: SimEvent | None = None
        self._out_pending: list[Message] = []   # application sends posted to the worker, not run yet
        self._out_posted = False
        self.worker: SimWorker | None = pick_worker(ep.net, ep.workers) if ep.workers else None
        self._proto = ep.protocol_factory(ep, self)

    def __repr__(self) -> str:
        return f"<SimConnection #{self.uid} {self.ep.my_name} {self._proto!r}>"

    # --- what the simulator's oracle reads (a test double: its internals are open on purpose) -----------
    @property
    def proto(self) -> ProtocolV1:
        """The protocol machine of this session."""
        return self._proto

    @property
    def closed(self) -> bool:
        """Finished: the session is over or this connection was replaced."""
        return self._closed

    @property
    def last_fault(self) -> str | None:
        """Why the session last faulted."""
        return self._last_fault

    @property
    def fault_count(self) -> int:
        """How many faults this connection saw."""
        return self._fault_count

    # --- the user-visible Connection ----------------------------------------------------------------
    @property
    def down(self) -> bool:
        """Marked down by the user."""
        return self._down

    @property
    def peer_type(self) -> int | None:
        t = self._proto.peer_type
        return self.target_type if t is None else t

    @property
    def peer_name(self) -> EntityName | None:
        return self._proto.peer_name

    @property
    def features(self) -> int:
        return self._proto.features

    def get_peer_addr(self) -> EntityAddr | None:
        return self._proto.peer_addr or self.target

    def is_connected(self) -> bool:
        return not self._closed and self._proto.is_connected()

    def send_message(self, msg: Message) -> bool:
        """Queue ``msg``; False (and nothing queued) if the connection is down or closed.

        With workers, as AsyncConnection from an application thread: the message waits in a list and
        the first send of a burst posts one flush to the connection's worker."""
        if self._down or self._closed:
            return False
        self.ep.sent.append((self.net.now_us(), self.uid, msg))
        if self.worker is None:
            self._call(self._proto.send_message, msg)
            return True
        self._out_pending.append(msg)
        if not self._out_posted:
            self._out_posted = True
            self._post(self._flush_pending, "sends")
        return True

    def _flush_pending(self) -> None:
        msgs, self._out_pending = self._out_pending, []
        self._out_posted = False
        if self._closed:
            self._unsent(msgs)
            return
        now = self.net.now_us()
        for m in msgs:
            self._handle(self._proto.send_message(m, now))
        self._after()

    def _unsent(self, msgs: list[Message]) -> None:
        """Sends the session ended before they reached the protocol: reported as its queue would be
        (silently dropped after mark_down, as AsyncConnection._unsent)."""
        if msgs and not self._down:
            self.ep.record("discarded", self, tuple(msgs))

    def send_keepalive(self) -> None:
        if not (self._down or self._closed):
            if self.worker is None:
                self._call(self._proto.send_keepalive)
            else:
                self._post(lambda: self._call(self._proto.send_keepalive), "keepalive")

    def mark_down(self) -> None:
        """End the session (no reset callback); connect_to hands out a new connection afterwards."""
        if self._down:
            return
        self._down = True
        self._out_pending.clear()
        self._call(self._proto.mark_down)   # stopped, then out of the map (as AsyncConnection.mark_down)
        self.ep.forget(self)

    # --- starting ------------------------------------------------------------------------------------
    def begin_connect(self) -> None:
        """connect_to, before the session is published (AsyncConnection.begin_connect): the protocol
        starts in the caller, so an accept that finds the session sees CONNECTING and its peer address;
        the actions it asks for (timer, TCP connect) are performed on the worker."""
        assert self.target is not None and self.target_type is not None
        acts = self._proto.start_connect(self.target, self.target_type, self.net.now_us())
        if self.worker is None:
            self._perform(acts)
        else:
            self._post(lambda: self._perform(acts), "connect")

    def _perform(self, acts: list) -> None:
        if not self._closed:
            self._handle(acts)
            self._after()

    def accept(self, end: SimSocketEnd) -> None:
        """A socket the listener accepted for this connection; start_accept runs on its worker."""
        self.sock = end   # read only once start_accept has run (it sets end.owner)
        if self.worker is None:
            self._start_accept()
        else:
            self._post(self._start_accept, "accept")

    def crash(self) -> SimSocketEnd | None:
        """The process died: everything is released at once and nobody is told; returns the socket."""
        end, self.sock = self.sock, None
        self._finish()
        return end

    def _start_accept(self) -> None:
        """The accepted socket reaches the worker (AsyncConnection.start_accept)."""
        end = self.sock
        if self._closed or end is None:
            return
        if end.closed:   # it died before the worker took it (getpeername fails): the session just ends
            self.sock = None
            self._call(self._proto.mark_down)
            return
        end.owner = self
        self._call(self._proto.start_accept, end.peer, end.local)

    # --- primitives of the connection core ------------------------------------------------------------
    def _post(self, fn: Callable[[], None], what: str = "") -> None:
        """Run ``fn`` on this connection's worker (dispatch_event_external); without workers, as an
        event of its own 0-50 us later."""
        label = f"{what} #{self.uid}"
        if self.worker is None:
            self.net.call_later(self.net.rng.randint(0, 50), fn, label)
        else:
            self.worker.post(fn, label)

    def _call(self, fn: Callable[..., list], *args: Any) -> None:
        if not self._closed:
            self._handle(fn(*args, self.net.now_us()))
            self._after()

    def _socket_open(self) -> bool:
        return self.sock is not None

    def _open_socket(self, addr: EntityAddr) -> None:
        self.net.connect(self, addr)

    def _close_socket(self, reason: str) -> None:
        self._connect_token = 0
        if self.sock is not None:
            self.net.close(self.sock)
            self.sock = None

    def _timer_start(self, kind: A.TimerKind, delay_us: int) -> SimEvent:
        return self.net.call_later(delay_us, lambda: self._on_timer(kind), f"timer {kind.value}")

    def _timer_stop(self, handle: SimEvent) -> None:
        handle.cancel()

    def _dispatch(self, msg: Message) -> None:
        # the simulator's stand-in for a Connection (the protocol hands its owner to messages)
        if msg.get_connection() is not self:  # type: ignore[comparison-overlap]
            self.ep.anomaly(self, f"delivered {msg!r} carries connection {msg.get_connection()!r}")
        self.ep.deliver(self, msg)

    def _notify(self, event: A.ConnEvent) -> None:
        self.ep.record("notify", self, event)

    def _faulted(self, reason: str, error: Exception | None, notable: bool = False) -> None:
        self.net.stats["faults"] += 1
        if error is not None and not isinstance(error, MsgrError):
            self.ep.anomaly(self, f"fault with an untyped error {error!r}")
        self.ep.record("fault", self, (reason, error))

    def _report_discarded(self, msgs: tuple) -> None:
        self.ep.record("discarded", self, tuple(msgs))

    def _take_handoff(self) -> SimSocketEnd | None:
        end = self.sock
        if end is None:
            return None
        if self._proto.has_output():   # what was not written yet goes first, as AsyncConnection's wbufs
            self.net.write(end, b"".join(self._proto.take_output()))
        end.owner = None              # detached, not closed
        self.sock = None
        self.ep.detached.add(end)
        return end

    def _claim_handoff(self, end: SimSocketEnd) -> tuple[EntityAddr, EntityAddr] | None:
        self.ep.detached.discard(end)
        return None if end.closed else (end.peer, end.local)

    def _drop_handoff(self, end: SimSocketEnd) -> None:
        self.ep.detached.discard(end)
        self.net.close(end)

    def _install_handoff(self, end: SimSocketEnd) -> None:
        self.sock = end
        end.owner = self

    def _contract_broken(self, text: str) -> None:
        self.ep.anomaly(self, text)

    def _registered(self) -> None:
        self.ep.record("registered", self, self._proto.peer_addr)

    def _released(self) -> None:
        if self._pump_ev is not None:
            self._pump_ev.cancel()
            self._pump_ev = None
        pending, self._out_pending = self._out_pending, []
        self._unsent(pending)
        if self.worker is not None:
            self.worker.references -= 1
        self.ep.all.discard(self)

    def _unregister(self, reason: str) -> None:
        self.ep.record("closed", self, reason)
        self.ep.unregister_conn(self._proto)

    # --- reading and writing --------------------------------------------------------------------------
    def _after(self) -> None:
        """Write whatever the protocol has (one sendmsg), then keep reading if bytes wait."""
        p = self._proto
        if p.has_output():
            data = b"".join(p.take_output())
            if self.sock is not None:
                self.net.write(self.sock, data)
            elif data:
                self.ep.anomaly(self, f"{len(data)} output bytes with no socket in {p.state!r}")
        end = self.sock
        if end is not None and end.inbox and p.wants_read and self._pump_ev is None and not self._closed:
            self._pump_ev = self.net.call_later(0, self._pump, f"pump #{self.uid}")

    def _pump(self) -> None:
        """One readable event: a few recv_into of random sizes into the protocol's buffer."""
        self._pump_ev = None
        net, rng = self.net, self.net.rng
        end = self.sock
        for _ in range(rng.randint(*net.params.reads_per_event)):
            if end is None or end is not self.sock or self._closed or not end.inbox or not self._proto.wants_read:
                return
            if not end.inbox[0]:  # EOF, nothing before it
                end.inbox.popleft()
                self._call(self._proto.buffer_updated, 0)
                return
            buf = self._proto.get_buffer()
            if len(buf) == 0:
                self.ep.anomaly(self, f"get_buffer() returned an empty buffer in {self._proto.state!r}")
                return
            n = self._recv_into(end, buf, min(len(buf), rng.choice(net.params.recv_sizes)))
            self._call(self._proto.buffer_updated, n)
        self._after()

    @staticmethod
    def _recv_into(end: SimSocketEnd, buf: memoryview, cap: int) -> int:
        n = 0
        inbox = end.inbox
        while n < cap and inbox and inbox[0]:
            head = inbox[0]
            k = min(cap - n, len(head) - end.off)
            buf[n:n + k] = head[end.off:end.off + k]
            n += k
            end.off += k
            if end.off == len(head):
                inbox.popleft()
                end.off = 0
        return n

    # --- network callbacks ------------------------------------------------------------------------------
    def net_begin_connect(self) -> int:
        self._token_seq += 1
        self._connect_token = self._token_seq
        return self._token_seq

    def net_connected(self, token: int, end: SimSocketEnd) -> None:
        if token != self._connect_token or self._closed:
            if not end.closed:
                self.net.close(end)   # an abandoned attempt: the server reads EOF
            return
        if end.closed:   # reset before we saw the connect complete
            self.net_connect_failed(token, "connection reset during connect", False)
            return
        self._connect_token = 0
        self.sock = end
        end.owner = self
        self._call(self._proto.on_connected, end.local)

    def net_connect_failed(self, token: int, reason: str, refused: bool) -> None:
        if token != self._connect_token or self._closed:
            return
        self._connect_token = 0
        self._call(lambda now: self._proto.on_socket_error(reason, now, refused=refused))

    def net_readable(self, end: SimSocketEnd) -> None:
        if end is self.sock and self._pump_ev is None and self._proto.wants_read and not self._closed:
            self._pump_ev = self.net.call_later(0, self._pump, f"pump #{self.uid}")

    def net_error(self, end: SimSocketEnd, reason: str) -> None:
        if end is self.sock and not self._closed:
            self.sock = None
            self._call(self._proto.on_socket_error, reason)
