"""Chaos runs over the simulator: a small cluster, random operations, and the delivery oracle.

:class:`Cluster` builds 2-3 endpoints with a consistent set of Ceph policies
(peers, monitors, client->osd, client->mds), with random throttles,
dispatcher speeds and backoffs, and offers the operations a test drives
(send, keepalive, mark_down, connect from both sides, socket reset,
partition, heal, restart, advance time). :meth:`Cluster.check_safety`
holds after every step; :meth:`Cluster.settle` + :meth:`check_liveness`
hold once the faults stop. ``run_seed(seed)`` is one whole random run:
the hypothesis state machine and the ``make fuzz`` seed sweep share all of
it, and a failure message always carries the seed.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from typing import NoReturn

from msgr.config import Config
from msgr.entity import EntityName
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.actions import ConnEvent
from msgr.protocol.states import HANDSHAKE_STATES, State
from msgr.sim.endpoint import SimConnection, SimEndpoint
from msgr.sim.network import NetParams, SimNetwork
from msgr.throttle import Throttle

__all__ = ["Cluster", "OracleError", "SCENARIOS", "make_message", "parse_message", "run_seed"]

MSG_TYPE = 0x7F5E
_MAGIC = b"SIMM"
_HEAD = struct.Struct("<4sQQ")   # magic, sender connection uid, n (per sender connection)
# "hb-peers": OSD heartbeat messengers (lossy_client both ways, both bound), the one pair where a
# connection race replaces a *lossy* session (StopExisting)
SCENARIOS = ("peers", "mons", "client-osd", "client-mds", "hb-peers")
_SCENARIOS_BEFORE_WORKERS = SCENARIOS[:4]   # drawn from without workers: recorded seeds keep their scenario
_RESETS = (ConnEvent.BAD_RESET, ConnEvent.BAD_REMOTE_RESET)


class OracleError(AssertionError):
    """A delivery, ordering, liveness or resource invariant was broken."""


def _pattern(uid: int, n: int, size: int) -> bytes:
    unit = struct.pack("<QQ", uid, n)
    return (unit * (size // 16 + 1))[:size]


def make_message(uid: int, n: int, prio: int, front: int = 0, data: int = 0) -> Message:
    """A message whose bytes say who sent it and which one it is (and let corruption show)."""
    m = Message()
    m.header.type = MSG_TYPE
    m.header.priority = prio
    m.front = _HEAD.pack(_MAGIC, uid, n) + _pattern(uid, n, front)
    m.data = _pattern(n, uid, data)
    return m


def parse_message(m: Message) -> tuple[int, int]:
    """(sender uid, n) of a :func:`make_message` message; OracleError if its bytes were altered."""
    front = bytes(m.front)
    magic, uid, n = _HEAD.unpack_from(front)
    if magic != _MAGIC or front[_HEAD.size:] != _pattern(uid, n, len(front) - _HEAD.size) \
            or bytes(m.data) != _pattern(n, uid, len(m.data)):
        raise OracleError(f"corrupted message delivered: {m!r}")
    return uid, n


@dataclass
class _Sent:
    uid: int           # sender connection
    n: int
    prio: int
    t_us: int
    src: str           # endpoint names
    dst: str
    size: int


def _policies(scenario: str, rng: random.Random, mine: EntityName) -> tuple[dict[int, Policy], bool]:
    """Ceph's policy pairs for the scenario, as seen from endpoint ``mine``; (policies, listens)."""
    T = EntityName
    if scenario == "peers":
        return {T.TYPE_OSD: Policy.lossless_peer()}, True
    if scenario == "hb-peers":
        return {T.TYPE_OSD: Policy.lossy_client()}, True
    if scenario == "mons":
        return {T.TYPE_MON: Policy.lossless_peer_reuse()}, True
    if scenario == "client-osd":
        if mine.type == T.TYPE_CLIENT:
            return {T.TYPE_OSD: Policy.lossy_client()}, False
        return {T.TYPE_CLIENT: Policy.stateless_server(), T.TYPE_OSD: Policy.lossless_peer()}, True
    if mine.type == T.TYPE_CLIENT:
        return {T.TYPE_MDS: Policy.lossless_client()}, False
    return {T.TYPE_CLIENT: Policy.stateful_server(), T.TYPE_MDS: Policy.lossless_peer()}, True


def _names(scenario: str, k: int) -> list[EntityName]:
    if scenario in ("peers", "hb-peers"):
        return [EntityName.osd(i) for i in range(k)]
    if scenario == "mons":
        return [EntityName.mon(chr(ord("a") + i), rank=i) for i in range(k)]
    server = EntityName.osd if scenario == "client-osd" else EntityName.mds
    return [EntityName.client(4100 + 0)] + [server(i) for i in range(k - 1)]


class Cluster:
    """2-3 simulated endpoints under one seed, with the operations and invariants of the tests."""

    def __init__(self, seed: int, scenario: str | None = None, n: int | None = None,
                 params: NetParams | None = None, trace: bool = False, workers: int = 0) -> None:
        self.seed = seed
        self.workers = workers   # per endpoint (msgr.sim.worker); 0: the model without workers
        self.net = SimNetwork(seed, params, trace=trace)
        rng = self.rng = self.net.rng
        self.scenario = scenario or rng.choice(SCENARIOS if workers else _SCENARIOS_BEFORE_WORKERS)
        k = n or rng.choice((2, 3))
        self.names = [str(x) for x in _names(self.scenario, k)]
        self.sent: dict[tuple[int, int], _Sent] = {}
        self._next_n: dict[int, int] = {}
        self.conns: dict[int, SimConnection] = {}     # every connection a message was sent on
        self.max_msg = 1
        self.restarts: list[tuple[int, str]] = []      # (t_us, name)
        self.markdowns: list[tuple[int, str, str]] = []   # (t_us, by endpoint, peer ip)
        crc_header = rng.random() < 0.9   # cluster-wide: no flag tells the peer it is off (as in Ceph)
        for name in _names(self.scenario, k):
            pols, listen = _policies(self.scenario, rng, name)
            for p in pols.values():     # small receive throttles now and then: back-pressure paths
                if rng.random() < 0.3:
                    p.throttler_messages = Throttle("msgs", rng.randint(1, 4))
                if rng.random() < 0.3:
                    p.throttler_bytes = Throttle("bytes", rng.choice((1, 100, 5000, 70000)))
            cfg = Config(ms_initial_backoff=rng.choice((0.01, 0.05, 0.2)), ms_max_backoff=rng.choice((0.5, 2.0)),
                         ms_crc_data=rng.random() < 0.8, ms_crc_header=crc_header,
                         ms_dispatch_throttle_bytes=rng.choice((0, 200, 100_000, 1 << 26)))
            delay = rng.choice(((0, 0), (0, 0), (10, 3000), (1000, 20000)))
            self.net.add_endpoint(name, cfg, listen, policies=pols, default_policy=Policy.lossless_peer(),
                                  dispatch_delay_us=delay, workers=workers)

    def __repr__(self) -> str:
        return f"Cluster(seed={self.seed}, {self.scenario}, {self.names}, workers={self.workers})"

    # --- operations ----------------------------------------------------------------------------------
    def ep(self, i: int) -> SimEndpoint:
        return self.net.endpoint(self.names[i % len(self.names)])

    def _can_connect(self, a: SimEndpoint, b: SimEndpoint) -> bool:
        return b.listen and not a.get_policy(b.my_name.type).server

    def conn(self, i: int, j: int) -> SimConnection | None:
        """The connection endpoint i would use to talk to j: connect_to, or a reply on an accepted one."""
        a, b = self.ep(i), self.ep(j)
        if a is b:
            return None
        if self._can_connect(a, b):
            return a.connect_to(b.my_name.type, b.get_myaddr())
        announced = {r.conn_uid for r in a.records if r.kind == "notify" and r.data is ConnEvent.ACCEPT}
        for c in a.connections():   # server role: reply on a live connection from b the application knows
            pa = c.proto.peer_addr
            if not c.down and pa is not None and pa.nonce == b.nonce and c.proto.state is not State.CLOSED \
                    and c.uid in announced:
                return c
        return None

    def send(self, i: int, j: int, front: int = 0, data: int = 0, prio: int = 127) -> bool:
        c = self.conn(i, j)
        if c is None:
            return False
        n = self._next_n.get(c.uid, 0) + 1
        m = make_message(c.uid, n, prio, front, data)
        if not c.send_message(m):
            return False
        self._next_n[c.uid] = n
        self.conns[c.uid] = c
        self.max_msg = max(self.max_msg, m.get_payload_len())
        self.sent[(c.uid, n)] = _Sent(c.uid, n, prio, self.net.now_us(), c.ep.my_name.__str__(),
                                      self.ep(j).my_name.__str__(), m.get_payload_len())
        return True

    def keepalive(self, i: int, j: int) -> None:
        c = self.conn(i, j)
        if c is not None:
            c.send_keepalive()

    def mark_down(self, i: int, j: int) -> None:
        a, b = self.ep(i), self.ep(j)
        self.markdowns.append((self.net.now_us(), str(a.my_name), b.ip))
        for c in a.connections():
            pa = c.proto.peer_addr or c.target
            if pa is not None and pa.ip == b.ip:
                c.mark_down()

    def connect_both(self, i: int, j: int) -> None:
        """Both sides connect at the same instant (the connection race of PROTOCOL.md §7 rows 17/18)."""
        a, b = self.ep(i), self.ep(j)
        if a is not b and self._can_connect(a, b) and self._can_connect(b, a):
            a.connect_to(b.my_name.type, b.get_myaddr()).send_keepalive()
            b.connect_to(a.my_name.type, a.get_myaddr()).send_keepalive()

    def reset_socket(self, k: int) -> None:
        live = self.net.live_sockets()
        if live:
            self.net.reset_socket(live[k % len(live)])

    def partition(self, i: int, j: int) -> None:
        self.net.partition(self.ep(i), self.ep(j))

    def heal(self) -> None:
        self.net.heal()

    def restart(self, i: int) -> None:
        name = self.names[i % len(self.names)]
        self.restarts.append((self.net.now_us(), name))
        self.net.restart(name)

    def advance(self, us: int) -> None:
        self.net.run_for(us)

    def settle(self) -> None:
        """Faults stop: heal, then run long enough for every backoff, WAIT and throttle retry."""
        self.net.heal()
        longest = max(self.ep(i).config.ms_max_backoff for i in range(len(self.names)))
        for _ in range(4):
            self.net.run_for(int(longest * 1e6) * 2 + 1_000_000)

    # --- invariants -------------------------------------------------------------------------------------
    def _all_endpoints(self) -> list[SimEndpoint]:
        return list(self.net.retired) + [self.net.endpoint(n) for n in self.names]

    def _fail(self, text: str) -> NoReturn:
        raise OracleError(f"{text}\n  replay: Cluster(seed={self.seed}, workers={self.workers}) "
                          f"scenario={self.scenario} t={self.net.now_us()}us")

    def check_safety(self) -> None:
        """Never: corruption, duplicates, reordering within a priority, owner-contract breaks, throttle overrun."""
        for ep in self._all_endpoints():
            if ep.anomalies:
                self._fail(f"owner contract broken: {ep.anomalies[:3]}")
            seen: dict[tuple[int, int], tuple[int, int]] = {}   # -> (t_us, receiving connection)
            last: dict[tuple[int, int, int], int] = {}
            for r in ep.records:
                if r.kind != "deliver":
                    continue
                uid, n = parse_message(r.data)
                s = self.sent.get((uid, n))
                if s is None:
                    self._fail(f"{ep.my_name} got a message nobody sent: uid={uid} n={n}")
                first = seen.get((uid, n))
                if first is not None and not (first[1] != r.conn_uid and self._marked_down_between(ep, s, first[0])):
                    self._fail(f"{ep.my_name} got message uid={uid} n={n} twice (#{first[1]}, #{r.conn_uid})")
                seen[(uid, n)] = (r.t_us, r.conn_uid)
                key = (uid, s.prio, r.conn_uid)
                if last.get(key, 0) > n:
                    self._fail(f"{ep.my_name}: uid={uid} prio={s.prio} n={n} after n={last[key]} (reordered)")
                last[key] = n
            if ep.alive:
                self._check_throttles(ep)
                for addr, proto in ep.conns.items():
                    if proto.state is State.CLOSED or proto.connection.closed:
                        self._fail(f"{ep.my_name}: closed session still registered under {addr}: {proto!r}")

    def _marked_down_between(self, ep: SimEndpoint, s: _Sent, t0: int) -> bool:
        """The receiver dropped its session with mark_down and its policy has no resetcheck: the sender's
        lossless reconnect is then accepted as a replace with in_seq 0 and unacked messages come again
        (Ceph's semantics for lossless_peer; resetcheck policies answer RESETSESSION instead)."""
        src = self.net.endpoint(s.src) if s.src in self.names else None
        if src is None or ep.get_policy(src.my_name.type).resetcheck:
            return False
        return any(t >= t0 and name == str(ep.my_name) and ip == src.ip for t, name, ip in self.markdowns)

    def _check_throttles(self, ep: SimEndpoint) -> None:
        ts = [ep.dispatch_throttle] + [t for p in ep.policies.values()
                                       for t in (p.throttler_bytes, p.throttler_messages) if t is not None]
        for t in ts:
            if t.current < 0 or (t.max and t.current > max(t.max, self.max_msg)):
                self._fail(f"{ep.my_name}: throttle over its limit: {t!r}")

    def _excused(self, s: _Sent) -> bool:
        """Lost messages the application was told about (or that went to a process that died)."""
        conn = self.conns[s.uid]
        ep = conn.ep
        if not ep.alive or any(name == s.dst and t >= s.t_us for t, name in self.restarts):
            return True   # a process died: what it had (or what was sent to it) is gone with it
        peer = conn.proto.peer_addr or conn.target
        if peer is None or peer.nonce != self.net.endpoint(s.dst).nonce:
            return True   # addressed to an earlier incarnation: the handshake refuses the new one
        for r in ep.records:
            if r.conn_uid != s.uid or r.t_us < s.t_us:
                continue
            if r.kind == "notify" and r.data in _RESETS:
                return True
            if r.kind == "discarded" and any(parse_message(m) == (s.uid, s.n) for m in r.data):
                return True
        if conn.proto.policy.server and any(name == s.dst and ip == ep.ip for _t, name, ip in self.markdowns):
            return True   # a server never reconnects: a client that dropped its session leaves us in STANDBY
        return conn.down or conn.proto.policy.lossy   # mark_down drops silently, by design

    def check_liveness(self) -> None:
        """After settle(): every unexcused message arrived, no handshake is stuck, throttles are empty."""
        delivered: set[tuple[int, int]] = set()
        for ep in self._all_endpoints():
            delivered.update(parse_message(r.data) for r in ep.records if r.kind == "deliver")
        lost = [s for k, s in self.sent.items() if k not in delivered and not self._excused(s)]
        if lost:
            self._fail(f"{len(lost)} message(s) never delivered and never reported lost, first: {lost[0]}")
        for name in self.names:
            ep = self.net.endpoint(name)
            for c in ep.connections():
                peer = c.proto.peer_addr or c.target
                live_peer = any(self.net.endpoint(o).get_myaddr() == peer for o in self.names) \
                    or (peer is not None and peer.port == 0)
                if c.proto.state in HANDSHAKE_STATES and live_peer and not c.down:
                    self._fail(f"{ep.my_name}: connection stuck in the handshake: {c!r}")
            self._check_one_session_per_peer(ep)
            if ep.dispatch_backlog() == 0:
                held = [t for t in [ep.dispatch_throttle] + [x for p in ep.policies.values() for x in
                                                             (p.throttler_bytes, p.throttler_messages) if x]
                        if t.current]
                if held:
                    self._fail(f"{ep.my_name}: throttles still held with nothing to dispatch: {held}")


    def _check_one_session_per_peer(self, ep: SimEndpoint) -> None:
        """At most one live session toward each running peer (the handshake's rule: a race or a replace
        leaves one). Sessions to a peer's earlier incarnation (another nonce) and marked-down ones aside."""
        seen: dict[str, SimConnection] = {}
        for c in ep.connections():
            addr = c.proto.peer_addr or c.target
            if c.down or c.proto.state is State.CLOSED or addr is None or addr.port == 0:
                continue
            for o in self.names:
                if o != str(ep.my_name) and self.net.endpoint(o).get_myaddr() == addr:
                    first = seen.setdefault(o, c)
                    if first is not c:
                        self._fail(f"{ep.my_name}: two live sessions to {o}: {first!r} and {c!r}")


@dataclass
class SeedResult:
    seed: int
    scenario: str
    workers: int
    steps: int
    sent: int
    faults: int
    stats: dict = field(default_factory=dict)


def run_seed(seed: int, steps: int = 60, trace: bool = False, workers: int = 0) -> SeedResult:
    """One random run: operations drawn from ``seed``, safety after each, liveness at the end.

    ``workers``: simulated workers per endpoint (0: the model without workers, in which the seeds
    recorded before workers were modelled replay as they did)."""
    cl = Cluster(seed, trace=trace, workers=workers)
    rng = random.Random(seed ^ 0x5EED)
    k = len(cl.names)
    ops = ("send", "send", "send", "send", "big", "keepalive", "advance", "advance", "reset", "partition",
           "heal", "mark_down", "connect_both", "restart")
    for _ in range(steps):
        op = rng.choice(ops)
        i, j = rng.randrange(k), rng.randrange(k)
        if op == "send":
            cl.send(i, j, rng.choice((0, 10, 200)), 0, rng.choice((63, 127, 127, 196)))
        elif op == "big":
            cl.send(i, j, rng.choice((5000, 70_000)), rng.choice((0, 9000, 200_000)), 127)
        elif op == "keepalive":
            cl.keepalive(i, j)
        elif op == "advance":
            cl.advance(rng.choice((10, 500, 5_000, 100_000, 1_000_000)))
        elif op == "reset":
            cl.reset_socket(rng.randrange(1 << 16))
        elif op == "partition":
            cl.partition(i, j)
        elif op == "heal":
            cl.heal()
        elif op == "mark_down" and rng.random() < 0.3:
            cl.mark_down(i, j)
        elif op == "connect_both":
            cl.connect_both(i, j)
        elif op == "restart" and rng.random() < 0.1:
            cl.restart(i)
        cl.check_safety()
    cl.settle()
    cl.check_safety()
    cl.check_liveness()
    return SeedResult(seed, cl.scenario, cl.workers, steps, len(cl.sent), cl.net.stats["faults"], dict(cl.net.stats))
