"""A simulated messenger: a ProtocolHost whose connections own real ProtocolV1 machines.

:class:`SimEndpoint` plays ``AsyncMessenger`` (connection map, policies,
global_seq, dispatch with throttles) and :class:`SimConnection` plays
``AsyncConnection`` (it performs every action exactly as the owner
contract says), over a :class:`~msgr.sim.network.SimNetwork` instead of
sockets and workers.

Workers (``workers=N``, see :mod:`msgr.sim.worker`): every connection lives on
one of the endpoint's N simulated workers, and what the real messenger posts
to a connection's worker is posted here too: application sends and
keepalives, the start of a connect or an accept, and the adopt, poke or stop
another connection asks of an existing session. Posts run in FIFO order per
worker, in turns the seed places. ``workers=0`` is the model the simulator
started with (kept so that recorded seeds replay): application calls run at
once, as a dispatcher's reply on the connection's own worker does, and each
cross-connection call is an event of its own, as if every connection had a
worker to itself.

Everything the application would see is recorded in ``SimEndpoint.records``
(deliveries, notifications, discarded messages, faults, closes) for test
oracles; ``anomalies`` collects owner-contract violations.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol import actions as A
from msgr.throttle import Throttle
from msgr.sim.fakehost import InMemoryHost
from msgr.sim.worker import SimWorker, pick_worker

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1
    from msgr.sim.network import SimEvent, SimNetwork, SimSocketEnd

__all__ = ["SimEndpoint", "SimConnection", "SimRecord"]

_WALL_BASE_S = 1_700_000_000


@dataclass(frozen=True, slots=True)
class SimRecord:
    """Something the application saw: kind is deliver | notify | discarded | fault | closed | registered."""
    t_us: int
    kind: str
    conn_uid: int
    data: Any


def _default_factory(host: "SimEndpoint", conn: "SimConnection") -> "ProtocolV1":
    from msgr.protocol.protocol_v1 import ProtocolV1
    return ProtocolV1(host, conn)


def _fresh_policy(p: Policy) -> Policy:
    """A copy with new throttles of the same size (a restarted process holds nothing)."""
    q = p.copy()
    if p.throttler_bytes is not None:
        q.throttler_bytes = Throttle(p.throttler_bytes.name, p.throttler_bytes.max)
    if p.throttler_messages is not None:
        q.throttler_messages = Throttle(p.throttler_messages.name, p.throttler_messages.max)
    return q


class SimConnection:
    """The owner of one ProtocolV1 (the user-visible Connection of the session)."""

    def __init__(self, ep: "SimEndpoint", target: EntityAddr | None = None, target_type: int | None = None) -> None:
        self.ep = ep
        self.net = ep.net
        self.uid = ep.net.next_uid()
        self.target, self.target_type = target, target_type
        self.sock: "SimSocketEnd | None" = None
        self.timers: dict[A.TimerKind, "SimEvent"] = {}
        self.closed = False       # session over (SessionClosed) or dropped (replaced / crashed)
        self.down = False         # marked down by the user
        self._connect_token = 0
        self._token_seq = 0
        self._pump_ev: "SimEvent | None" = None
        self._out_pending: list[Message] = []   # application sends posted to the worker, not run yet
        self._out_posted = False
        self.worker: SimWorker | None = pick_worker(ep.net, ep.workers) if ep.workers else None
        self.proto = ep.protocol_factory(ep, self)

    def __repr__(self) -> str:
        return f"<SimConnection #{self.uid} {self.ep.my_name} {self.proto!r}>"

    # --- the user-visible Connection ----------------------------------------------------------------
    @property
    def peer_type(self) -> int | None:
        t = self.proto.peer_type
        return self.target_type if t is None else t

    @property
    def peer_name(self) -> EntityName | None:
        return self.proto.peer_name

    @property
    def features(self) -> int:
        return self.proto.features

    def get_peer_addr(self) -> EntityAddr | None:
        return self.proto.peer_addr or self.target

    def is_connected(self) -> bool:
        return not self.closed and self.proto.is_connected()

    def send_message(self, msg: Message) -> bool:
        """Queue ``msg``; False (and nothing queued) if the connection is down or closed.

        With workers, as AsyncConnection from an application thread: the message waits in a list and
        the first send of a burst posts one flush to the connection's worker."""
        if self.down or self.closed:
            return False
        self.ep.sent.append((self.net.now_us(), self.uid, msg))
        if self.worker is None:
            self._run(self.proto.send_message(msg, self.net.now_us()))
            return True
        self._out_pending.append(msg)
        if not self._out_posted:
            self._out_posted = True
            self._post(self._flush_pending, f"sends #{self.uid}")
        return True

    def _flush_pending(self) -> None:
        msgs, self._out_pending = self._out_pending, []
        self._out_posted = False
        if self.closed:
            self._unsent(msgs)
            return
        now = self.net.now_us()
        for m in msgs:
            self._handle(self.proto.send_message(m, now))
        self._after()

    def _unsent(self, msgs: list[Message]) -> None:
        """Sends the session ended before they reached the protocol: reported as its queue would be
        (silently dropped after mark_down, as AsyncConnection._unsent)."""
        if msgs and not self.down:
            self.ep._record("discarded", self, tuple(msgs))

    def send_keepalive(self) -> None:
        if not (self.down or self.closed):
            if self.worker is None:
                self._run(self.proto.send_keepalive(self.net.now_us()))
            else:
                self._post(self.send_keepalive_internal, f"keepalive #{self.uid}")

    def mark_down(self) -> None:
        """End the session (no reset callback); connect_to hands out a new connection afterwards."""
        if self.down:
            return
        self.down = True
        self._out_pending.clear()
        self.ep._forget(self)
        if not self.closed:
            self._run(self.proto.mark_down(self.net.now_us()))

    # --- running the protocol -------------------------------------------------------------------------
    def _post(self, fn: Callable[[], None], what: str) -> None:
        """Run ``fn`` on this connection's worker (dispatch_event_external); without workers, as an
        event of its own 0-50 us later."""
        if self.worker is None:
            self.net.call_later(self.net.rng.randint(0, 50), fn, what)
        else:
            self.worker.post(fn, what)

    def _start_connect(self) -> None:
        if not self.closed:
            assert self.target is not None and self.target_type is not None
            self._run(self.proto.start_connect(self.target, self.target_type, self.net.now_us()))

    def _start_accept(self) -> None:
        """The accepted socket reaches the worker (AsyncConnection.start_accept)."""
        end = self.sock
        if self.closed or end is None:
            return
        if end.closed:   # it died before the worker took it (getpeername fails): the session just ends
            self.sock = None
            self._run(self.proto.mark_down(self.net.now_us()))
            return
        end.owner = self
        self._run(self.proto.start_accept(end.peer, end.local, self.net.now_us()))

    def _run(self, acts: list) -> None:
        self._handle(acts)
        self._after()

    def _handle(self, acts: list) -> None:
        for act in acts:
            h = _HANDLERS.get(type(act))
            if h is None:
                raise TypeError(f"{self!r}: the protocol returned {act!r}, not an action")
            h(self, act)

    def _after(self) -> None:
        """Write whatever the protocol has (one sendmsg), then keep reading if bytes wait."""
        p = self.proto
        if p.has_output():
            data = b"".join(p.take_output())
            if self.sock is not None:
                self.net.write(self.sock, data)
            elif data:
                self.ep._anomaly(self, f"{len(data)} output bytes with no socket in {p.state!r}")
        end = self.sock
        if end is not None and end.inbox and p.wants_read and self._pump_ev is None and not self.closed:
            self._pump_ev = self.net.call_later(0, self._pump, f"pump #{self.uid}")

    def _pump(self) -> None:
        """One readable event: a few recv_into of random sizes into the protocol's buffer."""
        self._pump_ev = None
        net, rng = self.net, self.net.rng
        end = self.sock
        for _ in range(rng.randint(*net.params.reads_per_event)):
            if end is None or end is not self.sock or self.closed or not end.inbox or not self.proto.wants_read:
                return
            if not end.inbox[0]:  # EOF, nothing before it
                end.inbox.popleft()
                self._run(self.proto.buffer_updated(0, net.now_us()))
                return
            buf = self.proto.get_buffer()
            if len(buf) == 0:
                self.ep._anomaly(self, f"get_buffer() returned an empty buffer in {self.proto.state!r}")
                return
            n = self._recv_into(end, buf, min(len(buf), rng.choice(net.params.recv_sizes)))
            self._run(self.proto.buffer_updated(n, net.now_us()))
        self._after()

    @staticmethod
    def _recv_into(end: "SimSocketEnd", buf: memoryview, cap: int) -> int:
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
    def _net_begin_connect(self) -> int:
        self._token_seq += 1
        self._connect_token = self._token_seq
        return self._token_seq

    def _net_connected(self, token: int, end: "SimSocketEnd") -> None:
        if token != self._connect_token or self.closed:
            if not end.closed:
                self.net.close(end)   # an abandoned attempt: the server reads EOF
            return
        if end.closed:   # reset before we saw the connect complete
            self._net_connect_failed(token, "connection reset during connect", False)
            return
        self._connect_token = 0
        self.sock = end
        end.owner = self
        self._run(self.proto.on_connected(end.local, self.net.now_us()))

    def _net_connect_failed(self, token: int, reason: str, refused: bool) -> None:
        if token != self._connect_token or self.closed:
            return
        self._connect_token = 0
        self._run(self.proto.on_socket_error(reason, self.net.now_us(), refused=refused))

    def _net_readable(self, end: "SimSocketEnd") -> None:
        if end is self.sock and self._pump_ev is None and self.proto.wants_read and not self.closed:
            self._pump_ev = self.net.call_later(0, self._pump, f"pump #{self.uid}")

    def _net_error(self, end: "SimSocketEnd", reason: str) -> None:
        if end is self.sock and not self.closed:
            self.sock = None
            self._run(self.proto.on_socket_error(reason, self.net.now_us()))

    def _on_timer(self, kind: A.TimerKind) -> None:
        self.timers.pop(kind, None)
        if not self.closed:
            self._run(self.proto.on_timer(kind, self.net.now_us()))

    def _adopt(self, end: "SimSocketEnd", reset: bool) -> None:
        """Lossless replace on the existing session (runs as its own event, like the worker hop)."""
        self.ep._detached.discard(end)
        if end.closed:   # the socket died in between: as getpeername failing in AsyncConnection.adopt
            if not self.closed:
                self._run(self.proto.adopt_failed("the socket to adopt died", self.net.now_us(), reset))
            return
        if self.closed:
            self.net.close(end)
            return
        self._handle(self.proto.adopt_socket(end.peer, end.local, self.net.now_us(), reset))
        # as AsyncConnection.adopt: whatever socket we had goes, a connect still in flight included
        # (adopt_socket from CONNECTING emits no CloseSocket for it)
        self._connect_token = 0
        if self.sock is not None and self.sock is not end:
            self.net.close(self.sock)
        self.sock = end
        end.owner = self
        self._after()

    def _finish(self) -> None:
        """This connection is dead: no socket, no timers."""
        if self.closed:
            return
        self.closed = True
        self._connect_token = 0
        if self.sock is not None:
            self.net.close(self.sock)
            self.sock = None
        for ev in self.timers.values():
            ev.cancel()
        self.timers.clear()
        if self._pump_ev is not None:
            self._pump_ev.cancel()
            self._pump_ev = None
        pending, self._out_pending = self._out_pending, []
        self._unsent(pending)
        if self.worker is not None:
            self.worker.references -= 1
        self.ep.all.discard(self)

    # --- actions (the owner contract) -------------------------------------------------------------------
    def _do_open_socket(self, act: A.OpenSocket) -> None:
        if self.sock is not None:
            self.ep._anomaly(self, f"OpenSocket while a socket is open in {self.proto.state!r}")
            self.net.close(self.sock)
            self.sock = None
        self.net.connect(self, act.addr)

    def _do_close_socket(self, act: A.CloseSocket) -> None:
        self._connect_token = 0
        if self.sock is not None:
            self.net.close(self.sock)
            self.sock = None

    def _do_arm_timer(self, act: A.ArmTimer) -> None:
        old = self.timers.pop(act.kind, None)
        if old is not None:
            old.cancel()
        kind = act.kind
        self.timers[kind] = self.net.call_later(act.delay_us, lambda: self._on_timer(kind), f"timer {kind.value}")

    def _do_cancel_timer(self, act: A.CancelTimer) -> None:
        ev = self.timers.pop(act.kind, None)
        if ev is not None:
            ev.cancel()

    def _do_deliver(self, act: A.Deliver) -> None:
        msg = act.msg
        if msg.get_connection() is not self:
            self.ep._anomaly(self, f"delivered {msg!r} carries connection {msg.get_connection()!r}")
        self.ep._deliver(self, msg)

    def _do_notify(self, act: A.Notify) -> None:
        self.ep._record("notify", self, act.event)

    def _do_fault(self, act: A.Fault) -> None:
        self.net.stats["faults"] += 1
        if act.error is not None and not isinstance(act.error, MsgrError):
            self.ep._anomaly(self, f"fault with an untyped error {act.error!r}")
        self.ep._record("fault", self, (act.reason, act.error))

    def _do_discarded(self, act: A.Discarded) -> None:
        self.ep._record("discarded", self, tuple(act.messages))

    def _do_replace_existing(self, act: A.ReplaceExisting) -> None:
        end = self.sock
        existing: SimConnection = act.existing.connection
        if end is None:
            return
        if self.proto.has_output():   # what was not written yet goes first, as AsyncConnection's wbufs
            self.net.write(end, b"".join(self.proto.take_output()))
        end.owner = None              # detached, not closed
        self.sock = None
        self.ep._detached.add(end)
        existing._post(lambda: existing._adopt(end, act.reset_session), f"adopt #{existing.uid}")
        self._finish()

    def _do_poke_existing(self, act: A.PokeExisting) -> None:
        existing: SimConnection = act.existing.connection
        existing._post(existing.send_keepalive_internal, f"poke #{existing.uid}")

    def _do_stop_existing(self, act: A.StopExisting) -> None:
        existing: SimConnection = act.existing.connection

        def stop() -> None:
            # Ceph's replace() on a lossy session: existing->protocol->stop() + queue_reset, whatever its
            # state (a fault would keep a session caught mid-connect alive and reconnecting, unregistered)
            if not existing.closed:
                existing._run(existing.proto.fault_replaced(self.net.now_us()))
        existing._post(stop, f"stop #{existing.uid}")

    def send_keepalive_internal(self) -> None:
        """A keepalive asked by the messenger (PokeExisting), allowed on a marked-down connection too."""
        if not self.closed:
            self._run(self.proto.send_keepalive(self.net.now_us()))

    def _do_registered(self, act: A.Registered) -> None:
        self.ep._record("registered", self, act.peer_addr)

    def _do_session_closed(self, act: A.SessionClosed) -> None:
        self.ep._record("closed", self, act.reason)
        self._finish()
        self.ep.unregister_conn(self.proto)


_HANDLERS: dict[type, Callable[[SimConnection, Any], None]] = {
    A.OpenSocket: SimConnection._do_open_socket, A.CloseSocket: SimConnection._do_close_socket,
    A.ArmTimer: SimConnection._do_arm_timer, A.CancelTimer: SimConnection._do_cancel_timer,
    A.Deliver: SimConnection._do_deliver, A.Notify: SimConnection._do_notify, A.Fault: SimConnection._do_fault,
    A.Discarded: SimConnection._do_discarded, A.ReplaceExisting: SimConnection._do_replace_existing,
    A.PokeExisting: SimConnection._do_poke_existing, A.StopExisting: SimConnection._do_stop_existing,
    A.Registered: SimConnection._do_registered, A.SessionClosed: SimConnection._do_session_closed,
}


class SimEndpoint(InMemoryHost):
    """A simulated messenger process (implements :class:`msgr.protocol.host.ProtocolHost`)."""

    def __init__(self, net: "SimNetwork", name: EntityName, ip: str, port: int, nonce: int, config: Config,
                 listen: bool = True, policies: dict[int, Policy] | None = None,
                 default_policy: Policy | None = None, dispatch_delay_us: tuple[int, int] = (0, 0),
                 protocol_factory: Callable[["SimEndpoint", SimConnection], Any] | None = None,
                 workers: int = 0) -> None:
        self.net = net
        # the messenger's worker threads (ms_async_op_threads); 0: the model without workers (see above)
        self.workers = [SimWorker(net, f"{name}/w{i}") for i in range(workers)]
        self.my_name = name
        self.ip, self.port, self.nonce, self.listen = ip, port, nonce, listen
        self.config = config
        self.dispatch_throttle = Throttle(f"dispatch-{name}", config.ms_dispatch_throttle_bytes)
        self.rng = random.Random(net.rng.getrandbits(64))
        self.policies: dict[int, Policy] = dict(policies or {})
        self.default_policy = default_policy or Policy()
        self.dispatch_delay_us = dispatch_delay_us
        self.protocol_factory = protocol_factory or _default_factory
        self.alive = True
        self.conns: dict[EntityAddr, Any] = {}   # peer addr -> ProtocolV1 (registered sessions)
        self.all: set[SimConnection] = set()     # live connections, registered or not
        self.records: list[SimRecord] = []
        self.sent: list[tuple[int, int, Message]] = []   # (t_us, conn uid, msg) as the user sent them
        self.anomalies: list[str] = []
        # a client that does not listen has a blank address until a peer tells it its IP
        self.myaddr = EntityAddr(EntityAddr.TYPE_LEGACY, nonce, ip if listen else "0.0.0.0", port if listen else 0)
        self.global_seq = 0
        self.learned: list[EntityAddr] = []
        self._dispatch_q: deque[Message] = deque()
        self._dispatch_ev: "SimEvent | None" = None
        self._detached: set = set()   # sockets between ReplaceExisting and adopt

    def __repr__(self) -> str:
        return f"<SimEndpoint {self.my_name} {self.myaddr}{'' if self.alive else ' dead'}>"

    # --- ProtocolHost (the rest is InMemoryHost) ------------------------------------------------
    def wall_clock(self) -> tuple[int, int]:
        us = self.net.now_us()
        return _WALL_BASE_S + us // 1_000_000, (us % 1_000_000) * 1000

    # --- the Messenger API ---------------------------------------------------------------------------------
    def connect_to(self, peer_type: int, addr: EntityAddr) -> SimConnection:
        """The session to ``addr`` (created and connecting if new), as AsyncMessenger.connect_to."""
        if not self.alive:
            raise MsgrError(f"{self.my_name} is not running")
        if addr == self.myaddr:
            raise MsgrError("the simulator has no loopback connection")
        proto = self.conns.get(addr)
        if proto is not None and not proto.connection.down and not proto.connection.closed:
            return proto.connection
        conn = SimConnection(self, addr, peer_type)
        self.conns[addr] = conn.proto
        self.all.add(conn)
        if conn.worker is None:
            conn._start_connect()
        else:
            conn._post(conn._start_connect, f"connect #{conn.uid}")
        return conn

    def send_to(self, msg: Message, peer_type: int, addr: EntityAddr) -> bool:
        return self.connect_to(peer_type, addr).send_message(msg)

    def mark_down(self, addr: EntityAddr) -> None:
        proto = self.conns.get(addr)
        if proto is not None:
            proto.connection.mark_down()

    def mark_down_all(self) -> None:
        for c in sorted(self.all, key=lambda c: c.uid):
            c.mark_down()

    def connections(self) -> list[SimConnection]:
        return sorted(self.all, key=lambda c: c.uid)

    def _forget(self, conn: SimConnection) -> None:
        for key, proto in list(self.conns.items()):
            if proto is conn.proto:
                del self.conns[key]

    # --- network side ------------------------------------------------------------------------------------------
    def _net_accept(self, end: "SimSocketEnd") -> None:
        conn = SimConnection(self)
        self.all.add(conn)
        conn.sock = end   # read only once start_accept has run on the connection's worker (it sets owner)
        if conn.worker is None:
            conn._start_accept()
        else:
            conn._post(conn._start_accept, f"accept #{conn.uid}")

    def _crash(self) -> None:
        """The process dies: its sockets reset or close, nothing else happens on its behalf."""
        self.alive = False
        net = self.net
        for w in self.workers:
            w.stop()
        for conn in self.connections():
            end = conn.sock
            conn.sock = None
            conn._finish()
            if end is not None:
                if net.rng.random() < 0.5:
                    net.reset_socket(end.sock, "connection reset by a crashed peer")
                else:
                    net.close(end)
        for end in sorted(self._detached, key=lambda e: e.sock.id):   # mid-replace sockets die too
            net.close(end)
        self._detached.clear()
        if self._dispatch_ev is not None:
            self._dispatch_ev.cancel()
        self._dispatch_q.clear()
        self.conns.clear()

    def _reincarnate(self, nonce: int) -> "SimEndpoint":
        return SimEndpoint(self.net, self.my_name, self.ip, self.port, nonce, self.config.copy(), self.listen,
                           {t: _fresh_policy(p) for t, p in self.policies.items()},
                           _fresh_policy(self.default_policy), self.dispatch_delay_us, self.protocol_factory,
                           len(self.workers))

    # --- dispatch and records -------------------------------------------------------------------------------
    def _deliver(self, conn: SimConnection, msg: Message) -> None:
        self.net.stats["delivered"] += 1
        self._record("deliver", conn, msg)
        lo, hi = self.dispatch_delay_us
        if hi <= 0:
            msg.release_throttles()
            return
        self._dispatch_q.append(msg)
        if self._dispatch_ev is None:
            self._dispatch_ev = self.net.call_later(self.net.rng.randint(lo, hi), self._dispatch_one, "dispatch")

    def _dispatch_one(self) -> None:
        """A slow dispatcher: one message per event, its throttles given back afterwards."""
        self._dispatch_ev = None
        if self._dispatch_q:
            self._dispatch_q.popleft().release_throttles()
        if self._dispatch_q:
            lo, hi = self.dispatch_delay_us
            self._dispatch_ev = self.net.call_later(self.net.rng.randint(lo, hi), self._dispatch_one, "dispatch")

    def dispatch_backlog(self) -> int:
        return len(self._dispatch_q)

    def _record(self, kind: str, conn: SimConnection, data: Any) -> None:
        self.records.append(SimRecord(self.net.now_us(), kind, conn.uid, data))
        self.net.log(f"{self.my_name} #{conn.uid} {kind} {data!r}")

    def _anomaly(self, conn: SimConnection, text: str) -> None:
        self.anomalies.append(f"t={self.net.now_us()} {self.my_name} #{conn.uid}: {text}")
        self.net.log(f"ANOMALY {self.my_name} #{conn.uid}: {text}")

    def records_of(self, kind: str, conn_uid: int | None = None) -> list[SimRecord]:
        return [r for r in self.records if r.kind == kind and (conn_uid is None or r.conn_uid == conn_uid)]
