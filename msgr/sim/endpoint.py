"""A simulated messenger: a ProtocolHost whose connections own real ProtocolV1 machines.

:class:`SimEndpoint` plays ``AsyncMessenger`` (connection map, policies,
global_seq, dispatch with throttles) and :class:`SimConnection` plays
``AsyncConnection`` (it performs every action exactly as the owner
contract says), over a :class:`~msgr.sim.network.SimNetwork` instead of
sockets and workers.

Workers (``workers=N``, see :mod:`msgr.sim.worker`): every connection lives on
one of the endpoint's N simulated workers, and what the real messenger posts
to a connection's worker is posted here too: application sends and
keepalives, the actions of a connect (started by ``connect_to`` itself), an accept, and the adopt, poke or stop
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.gone_peers import GonePeers
from msgr.sim.connection import SimConnection
from msgr.sim.fakehost import InMemoryHost
from msgr.sim.worker import SimWorker
from msgr.throttle import Throttle

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1
    from msgr.sim.network import SimEvent, SimNetwork, SimSocketEnd

__all__ = ["SimConnection", "SimEndpoint", "SimRecord"]

_WALL_BASE_S = 1_700_000_000


@dataclass(frozen=True, slots=True)
class SimRecord:
    """Something the application saw: kind is deliver | notify | discarded | fault | closed | registered."""
    t_us: int
    kind: str
    conn_uid: int
    data: Any


def _default_factory(host: SimEndpoint, conn: SimConnection) -> ProtocolV1:
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


class SimEndpoint(InMemoryHost):
    """A simulated messenger process (implements :class:`msgr.protocol.host.ProtocolHost`)."""

    def __init__(self, net: SimNetwork, name: EntityName, ip: str, port: int, nonce: int, config: Config,
                 listen: bool = True, policies: dict[int, Policy] | None = None,
                 default_policy: Policy | None = None, dispatch_delay_us: tuple[int, int] = (0, 0),
                 protocol_factory: Callable[[SimEndpoint, SimConnection], Any] | None = None,
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
        self.gone_pgs = GonePeers()
        self.all: set[SimConnection] = set()     # live connections, registered or not
        self.records: list[SimRecord] = []
        self.sent: list[tuple[int, int, Message]] = []   # (t_us, conn uid, msg) as the user sent them
        self.anomalies: list[str] = []
        # a client that does not listen has a blank address until a peer tells it its IP
        self.myaddr = EntityAddr(EntityAddr.TYPE_LEGACY, nonce, ip if listen else "0.0.0.0", port if listen else 0)
        self.global_seq = 0
        self.learned: list[EntityAddr] = []
        self._dispatch_q: deque[Message] = deque()
        self._dispatch_ev: SimEvent | None = None
        self.detached: set = set()   # sockets between ReplaceExisting and adopt

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
        conn.begin_connect()   # as AsyncMessenger: the protocol starts before the session is published
        self.conns[addr] = conn.proto
        self.all.add(conn)
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

    def forget(self, conn: SimConnection) -> None:
        for key, proto in list(self.conns.items()):
            if proto is conn.proto:
                del self.conns[key]

    # --- network side ------------------------------------------------------------------------------------------
    def net_accept(self, end: SimSocketEnd) -> None:
        conn = SimConnection(self)
        self.all.add(conn)
        conn.accept(end)

    def crash(self) -> None:
        """The process dies: its sockets reset or close, nothing else happens on its behalf."""
        self.alive = False
        net = self.net
        for w in self.workers:
            w.stop()
        for conn in self.connections():
            end = conn.crash()
            if end is not None:
                if net.rng.random() < 0.5:
                    net.reset_socket(end.sock, "connection reset by a crashed peer")
                else:
                    net.close(end)
        for end in sorted(self.detached, key=lambda e: e.sock.id):   # mid-replace sockets die too
            net.close(end)
        self.detached.clear()
        if self._dispatch_ev is not None:
            self._dispatch_ev.cancel()
        self._dispatch_q.clear()
        self.conns.clear()

    def reincarnate(self, nonce: int) -> SimEndpoint:
        return SimEndpoint(self.net, self.my_name, self.ip, self.port, nonce, self.config.copy(), self.listen,
                           {t: _fresh_policy(p) for t, p in self.policies.items()},
                           _fresh_policy(self.default_policy), self.dispatch_delay_us, self.protocol_factory,
                           len(self.workers))

    # --- dispatch and records -------------------------------------------------------------------------------
    def deliver(self, conn: SimConnection, msg: Message) -> None:
        self.net.stats["delivered"] += 1
        self.record("deliver", conn, msg)
        lo, hi = self.dispatch_delay_us
        if hi <= 0:
            msg._release_throttles()
            return
        self._dispatch_q.append(msg)
        if self._dispatch_ev is None:
            self._dispatch_ev = self.net.call_later(self.net.rng.randint(lo, hi), self._dispatch_one, "dispatch")

    def _dispatch_one(self) -> None:
        """A slow dispatcher: one message per event, its throttles given back afterwards."""
        self._dispatch_ev = None
        if self._dispatch_q:
            self._dispatch_q.popleft()._release_throttles()
        if self._dispatch_q:
            lo, hi = self.dispatch_delay_us
            self._dispatch_ev = self.net.call_later(self.net.rng.randint(lo, hi), self._dispatch_one, "dispatch")

    def dispatch_backlog(self) -> int:
        return len(self._dispatch_q)

    def record(self, kind: str, conn: SimConnection, data: Any) -> None:
        self.records.append(SimRecord(self.net.now_us(), kind, conn.uid, data))
        self.net.log(f"{self.my_name} #{conn.uid} {kind} {data!r}")

    def anomaly(self, conn: SimConnection, text: str) -> None:
        self.anomalies.append(f"t={self.net.now_us()} {self.my_name} #{conn.uid}: {text}")
        self.net.log(f"ANOMALY {self.my_name} #{conn.uid}: {text}")

    def records_of(self, kind: str, conn_uid: int | None = None) -> list[SimRecord]:
        return [r for r in self.records if r.kind == kind and (conn_uid is None or r.conn_uid == conn_uid)]
