"""A deterministic simulated network and virtual clock for sans-IO ProtocolV1 endpoints.

No sockets, no threads, no OS clock: a heap of events on a
:class:`~eventcenter.clock.FakeClock`. Everything random (latencies, how a
write is cut into chunks, how much one ``recv_into`` takes, nonces, the
endpoints' RNGs) is drawn from ONE ``random.Random(seed)``, and events with
equal due times run in the order they were scheduled, so a run replays
exactly from its seed.

The byte model is TCP's: each direction of a socket is an ordered pipe;
a write is cut into chunks that arrive in order after a latency; a closed
end's peer reads the bytes in flight, then EOF. Faults: ``reset_socket``
(both ends get an error at once, bytes in flight are lost, so frames are
cut at arbitrary points), ``partition``/``heal`` (connects time out, bytes
in flight stall until the heal, as TCP retransmits), ``restart`` (an
endpoint loses all state and comes back at the same ip:port with a new
nonce).
"""
from __future__ import annotations

import functools
import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventcenter.clock import FakeClock
from msgr.config import Config
from msgr.entity import EntityAddr, EntityName

if TYPE_CHECKING:  # pragma: no cover
    from msgr.sim.endpoint import SimConnection, SimEndpoint

__all__ = ["NetParams", "SimEvent", "SimSocket", "SimSocketEnd", "SimNetwork", "EOF"]

EOF = b""  # an inbox entry: the peer closed its end


@dataclass
class NetParams:
    """How the network behaves; every range is drawn from the network's RNG."""
    latency_us: tuple[int, int] = (20, 2_000)
    connect_timeout_us: tuple[int, int] = (1_000_000, 5_000_000)  # SYN retries while partitioned
    p_whole_write: float = 0.5      # a write arrives as one chunk
    p_tiny_chunks: float = 0.05     # a write arrives one byte (or a few) at a time
    max_chunks: int = 8
    recv_sizes: tuple[int, ...] = (1, 7, 64, 1024, 65536)  # caps of one recv_into
    reads_per_event: tuple[int, int] = (1, 4)                 # recv_into calls before yielding
    post_delay_us: tuple[int, int] = (0, 50)   # a posted call waits this long for its worker's turn


class SimEvent:
    """A scheduled callback; ``cancel()`` makes it a no-op (lazy deletion, like EventCenter)."""
    __slots__ = ("due_us", "seq", "fn", "cancelled", "what")

    def __init__(self, due_us: int, seq: int, fn: Callable[[], None], what: str) -> None:
        self.due_us, self.seq, self.fn, self.what = due_us, seq, fn, what
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: SimEvent) -> bool:
        return (self.due_us, self.seq) < (other.due_us, other.seq)


class SimSocketEnd:
    """One end of a simulated TCP connection; ``owner`` reads it (None while detached)."""
    __slots__ = ("sock", "side", "owner", "inbox", "off", "closed", "local", "peer")

    def __init__(self, sock: SimSocket, side: int, local: EntityAddr, peer: EntityAddr) -> None:
        self.sock, self.side, self.local, self.peer = sock, side, local, peer
        self.owner: SimConnection | None = None
        self.inbox: deque[bytes] = deque()   # arrived, unread chunks (EOF = peer closed)
        self.off = 0                          # bytes of inbox[0] already read
        self.closed = False

    @property
    def other(self) -> SimSocketEnd:
        return self.sock.ends[1 - self.side]

    def __repr__(self) -> str:
        return f"<end {self.sock.id}{'ab'[self.side]} {self.local}->{self.peer}{' closed' if self.closed else ''}>"


class SimSocket:
    """Two ends (0 = connecting side, 1 = accepting side) and a pipe per direction."""

    def __init__(self, sid: int, client_ip: str, server_ip: str, client: EntityAddr, server: EntityAddr) -> None:
        self.id = sid
        self.ips = (client_ip, server_ip)
        self.ends = (SimSocketEnd(self, 0, client, server), SimSocketEnd(self, 1, server, client))
        self.last_due = [0, 0]                       # per direction (by sending side): in-order arrival
        self.flight: tuple[deque, deque] = (deque(), deque())  # per direction: chunks not yet arrived
        self.blocked = [0, 0]                        # per direction: arrivals held by a partition
        self.epoch = 0                               # bumped by a reset: chunks of an older epoch vanish

    @property
    def dead(self) -> bool:
        return self.ends[0].closed and self.ends[1].closed


class SimNetwork:
    """Endpoints, sockets, partitions and the event heap, all driven by one seed."""

    def __init__(self, seed: int, params: NetParams | None = None, trace: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.params = params or NetParams()
        self.clock = FakeClock(0)
        self._heap: list[SimEvent] = []
        self._seq = 0
        self.endpoints: dict[str, SimEndpoint] = {}   # by str(name): the current incarnation
        self.retired: list[SimEndpoint] = []           # earlier incarnations (restarts)
        self._by_ipport: dict[tuple[str, int], SimEndpoint] = {}
        self.sockets: list[SimSocket] = []
        self._partitions: set[frozenset[str]] = set()
        self._next_uid = 0
        self.trace: list[str] | None = [] if trace else None
        self.stats = dict(events=0, writes=0, bytes=0, chunks=0, connects=0, refused=0, timeouts=0,
                          resets=0, partitions=0, restarts=0, faults=0, delivered=0)

    def __repr__(self) -> str:
        return f"SimNetwork(seed={self.seed}, t={self.now_us()}us)"

    # --- clock and events -------------------------------------------------------------------------
    def now_us(self) -> int:
        return self.clock.now_us()

    def call_later(self, delay_us: int, fn: Callable[[], None], what: str = "") -> SimEvent:
        self._seq += 1
        ev = SimEvent(self.now_us() + max(0, int(delay_us)), self._seq, fn, what)
        heapq.heappush(self._heap, ev)
        return ev

    def log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now_us():>12} {text}")

    def next_uid(self) -> int:
        self._next_uid += 1
        return self._next_uid

    def pending(self) -> int:
        """Events not cancelled (timers included)."""
        return sum(1 for e in self._heap if not e.cancelled)

    def step(self) -> bool:
        """Run the next event; False if there is none."""
        heap = self._heap
        while heap:
            ev = heapq.heappop(heap)
            if ev.cancelled:
                continue
            if ev.due_us > self.now_us():
                self.clock.advance(ev.due_us - self.now_us())
            self.stats["events"] += 1
            try:
                ev.fn()
            except BaseException as exc:
                exc.add_note(f"simulation seed={self.seed} t={self.now_us()}us event={ev.what or ev.fn!r}")
                raise
            return True
        return False

    def run_until(self, t_us: int, max_events: int = 5_000_000) -> int:
        """Run every event due up to ``t_us``, then set the clock to ``t_us``; returns events run."""
        n = 0
        heap = self._heap
        while heap and n < max_events:
            if heap[0].cancelled:
                heapq.heappop(heap)
                continue
            if heap[0].due_us > t_us:
                break
            self.step()
            n += 1
        if n >= max_events:
            raise RuntimeError(f"simulation did not settle after {n} events (seed={self.seed}): livelock?")
        if t_us > self.now_us():
            self.clock.advance(t_us - self.now_us())
        return n

    def run_for(self, us: int, max_events: int = 5_000_000) -> int:
        return self.run_until(self.now_us() + us, max_events)

    # --- topology ---------------------------------------------------------------------------------
    def add_endpoint(self, name: EntityName, config: Config | None = None, listen: bool = True,
                     **kwargs: Any) -> SimEndpoint:
        """A new endpoint at 10.0.<n>.1:6800 with a nonce from the seed."""
        from msgr.sim.endpoint import SimEndpoint
        key = str(name)
        if key in self.endpoints:
            raise ValueError(f"endpoint {key} exists (use restart)")
        n = len(self.endpoints) + len(self.retired) + 1
        ip = f"10.0.{n}.1"
        ep = SimEndpoint(self, name, ip, 6800, self._new_nonce(), config or Config(), listen, **kwargs)
        self._install(ep)
        return ep

    def _new_nonce(self) -> int:
        return self.rng.randrange(1, 1 << 32)

    def _install(self, ep: SimEndpoint) -> None:
        self.endpoints[str(ep.my_name)] = ep
        self._by_ipport[(ep.ip, ep.port)] = ep
        self.log(f"endpoint {ep.my_name} up at {ep.get_myaddr()}")

    def endpoint(self, name: str | EntityName) -> SimEndpoint:
        return self.endpoints[str(name)]

    def restart(self, name: str | EntityName) -> SimEndpoint:
        """Crash the endpoint (sockets reset, state lost) and start it again with a new nonce."""
        old = self.endpoints[str(name)]
        old.crash()
        self.retired.append(old)
        self.stats["restarts"] += 1
        ep = old.reincarnate(self._new_nonce())
        self._install(ep)
        return ep

    # --- partitions -------------------------------------------------------------------------------
    def partition(self, a: str | SimEndpoint, b: str | SimEndpoint) -> None:
        pa, pb = self._ip(a), self._ip(b)
        if pa != pb:
            self._partitions.add(frozenset((pa, pb)))
            self.stats["partitions"] += 1
            self.log(f"partition {pa} | {pb}")

    def heal(self, a: str | SimEndpoint | None = None, b: str | SimEndpoint | None = None) -> None:
        """Heal one partition (or all with no arguments); stalled bytes flow again, in order."""
        if a is None:
            self._partitions.clear()
        else:
            assert b is not None   # one partition is named by both of its sides
            self._partitions.discard(frozenset((self._ip(a), self._ip(b))))
        self.log("heal")
        for s in self.sockets:
            for d in (0, 1):
                if s.blocked[d] and not self.partitioned(*s.ips):
                    n, s.blocked[d] = s.blocked[d], 0
                    for _ in range(n):
                        self._schedule_arrival(s, d)

    def partitioned(self, ip_a: str, ip_b: str) -> bool:
        return frozenset((ip_a, ip_b)) in self._partitions

    def _ip(self, x: str | SimEndpoint) -> str:
        return self.endpoints[x].ip if isinstance(x, str) else x.ip

    # --- sockets (called by SimConnection, the owner) ----------------------------------------------
    def connect(self, conn: SimConnection, addr: EntityAddr) -> None:
        """A non-blocking TCP connect from ``conn``: later on_connected or on_socket_error."""
        self.stats["connects"] += 1
        token = conn.net_begin_connect()
        src = conn.ep
        dst = self._by_ipport.get((addr.ip, addr.port))
        lat = self._latency()
        if dst is None or not dst.alive or not dst.listen:
            self.stats["refused"] += 1
            self.call_later(lat, lambda: conn.net_connect_failed(token, "connection refused", True),
                            "refused")
            return
        if self.partitioned(src.ip, dst.ip):
            self.stats["timeouts"] += 1
            lo, hi = self.params.connect_timeout_us
            self.call_later(self.rng.randint(lo, hi),
                            lambda: conn.net_connect_failed(token, "connection timed out", False), "timeout")
            return
        sid = len(self.sockets) + 1
        local = EntityAddr(EntityAddr.TYPE_LEGACY, 0, src.ip, 40000 + sid)
        server = EntityAddr(EntityAddr.TYPE_LEGACY, 0, dst.ip, dst.port)
        sock = SimSocket(sid, src.ip, dst.ip, local, server)
        self.sockets.append(sock)
        cend, send = sock.ends
        self.log(f"connect {src.my_name} #{conn.uid} -> {dst.my_name} sock {sid}")

        def accept() -> None:
            if send.closed:     # reset before the accept: the client sees its connect fail
                self.call_later(lat - lat // 2, lambda: conn.net_connected(token, cend), f"connected {sid}")
                return
            if not dst.alive:   # the server died meanwhile: the client sees a refused connect
                self._kill_end(send)
                self._kill_end(cend)
                conn.net_connect_failed(token, "connection refused", True)
                return
            dst.net_accept(send)
            self.call_later(lat - lat // 2, lambda: conn.net_connected(token, cend), f"connected {sid}")
        self.call_later(lat // 2, accept, f"accept {sid}")

    def write(self, end: SimSocketEnd, data: bytes) -> None:
        """Bytes written on ``end``; they reach the other end in chunks, in order."""
        if end.closed or not data:
            return
        self.stats["writes"] += 1
        self.stats["bytes"] += len(data)
        s = end.sock
        for c in self._cut(data):
            self._schedule_chunk(s, end.side, c, s.epoch)

    def close(self, end: SimSocketEnd) -> None:
        """The owner closed ``end``: the peer reads what is in flight, then EOF."""
        if end.closed:
            return
        end.closed = True
        end.owner = None
        end.inbox.clear()
        end.off = 0
        s = end.sock
        self._schedule_chunk(s, end.side, EOF, s.epoch)

    def _kill_end(self, end: SimSocketEnd) -> None:
        end.closed = True
        end.owner = None
        end.inbox.clear()
        end.off = 0

    def reset_socket(self, sock: SimSocket, reason: str = "connection reset by peer") -> None:
        """An RST: bytes in flight are lost and both live ends get an error now."""
        if sock.dead:
            return
        self.stats["resets"] += 1
        sock.epoch += 1
        for d in (0, 1):
            sock.flight[d].clear()
            sock.blocked[d] = 0
        self.log(f"reset sock {sock.id}")
        for end in sock.ends:
            if end.closed:
                continue
            owner = end.owner
            self._kill_end(end)
            if owner is not None:
                self.call_later(0, functools.partial(owner.net_error, end, reason), f"rst {sock.id}")

    def live_sockets(self) -> list[SimSocket]:
        return [s for s in self.sockets if not s.dead]

    def _latency(self) -> int:
        lo, hi = self.params.latency_us
        return self.rng.randint(lo, hi)

    def _cut(self, data: bytes) -> list[bytes]:
        p, rng, n = self.params, self.rng, len(data)
        r = rng.random()
        if n <= 1 or r < p.p_whole_write:
            return [data]
        if r < p.p_whole_write + p.p_tiny_chunks and n <= 4096:
            step = rng.randint(1, 3)
            return [data[i:i + step] for i in range(0, n, step)]
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, p.max_chunks - 1))))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]

    def _schedule_chunk(self, s: SimSocket, direction: int, chunk: bytes, epoch: int) -> None:
        s.flight[direction].append(chunk)
        self.stats["chunks"] += 1
        self._schedule_arrival(s, direction)

    def _schedule_arrival(self, s: SimSocket, direction: int) -> None:
        # Each arrival event takes the HEAD of the pipe, so order holds whatever the due times.
        due = max(s.last_due[direction], self.now_us() + self._latency())
        s.last_due[direction] = due
        self._seq += 1
        epoch = s.epoch
        heapq.heappush(self._heap, SimEvent(due, self._seq, lambda: self._arrive(s, direction, epoch),
                                            f"chunk {s.id}"))

    def _arrive(self, s: SimSocket, direction: int, epoch: int) -> None:
        if epoch != s.epoch or not s.flight[direction]:
            return  # lost in a reset
        if self.partitioned(*s.ips):
            s.blocked[direction] += 1   # TCP keeps retransmitting; it arrives after the heal
            return
        chunk = s.flight[direction].popleft()
        end = s.ends[1 - direction]
        if end.closed:
            return
        end.inbox.append(chunk)
        if end.owner is not None:
            end.owner.net_readable(end)
