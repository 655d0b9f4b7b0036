"""An in-memory harness joining ProtocolV1 machines through byte pipes.

``WireNet`` runs every protocol machine under a :class:`WireConn`, a third
transport of the shared connection core (``msgr/connection_core.py``: what
each action means is written there once): OpenSocket makes a link to the host
listening at that address (or reports ECONNREFUSED), output is pulled every
step and delivered to the other end in chunks of random size, timers run on a
virtual clock, a handed-over link moves to the existing session, and calls
posted to another session run at the start of the next step (one worker).
Everything is driven by one seeded RNG, so a run is reproducible from its seed.
"""
from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from msgr.connection_core import ConnectionCore
from msgr.entity import EntityAddr
from msgr.message import Message
from msgr.protocol.actions import ConnEvent, TimerKind
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.sim.fakehost import FakeHost


class Link:
    """One TCP connection: two ends and a byte pipe toward each."""

    __slots__ = ("ends", "pipes", "closed", "eof_sent", "socks", "dead")

    def __init__(self, client: ProtocolV1, server: ProtocolV1, socks: tuple[EntityAddr, EntityAddr]) -> None:
        self.ends: list[ProtocolV1 | None] = [client, server]
        self.pipes: list[deque] = [deque(), deque()]   # pipes[i]: bytes travelling toward end i
        self.closed = [False, False]                    # end i closed its socket
        self.eof_sent = [False, False]
        self.socks = socks                              # (client side address, server side address)
        self.dead = False                               # broken by break_link: every end gets an error

    def index(self, proto: ProtocolV1) -> int:
        return 0 if self.ends[0] is proto else 1


class WireConn(ConnectionCore):
    """The owner of one ProtocolV1 in a WireNet: the connection core's primitives on links."""

    def __init__(self, net: WireNet, host: FakeHost) -> None:
        self._init_core()
        self.net = net
        self._proto = ProtocolV1(host, self)
        net.protos.append(self._proto)

    def _post(self, fn: Callable[[], None], what: str = "") -> None:
        self.net.pending.append(fn)

    def _call(self, fn: Callable[..., list], *args: Any) -> None:
        if not self._closed:
            self.net.apply(self._proto, fn(*args, self.net.now_us))

    def _socket_open(self) -> bool:
        return self._proto in self.net.link

    def _open_socket(self, addr: EntityAddr) -> None:
        self.net.pending.append(lambda: self.net._open(self._proto, addr))

    def _close_socket(self, reason: str) -> None:
        self.net._close_end(self._proto)

    def _timer_start(self, kind: TimerKind, delay_us: int) -> tuple[ProtocolV1, TimerKind]:
        key = (self._proto, kind)
        self.net.timers[key] = self.net.now_us + delay_us
        return key

    def _timer_stop(self, handle: tuple[ProtocolV1, TimerKind]) -> None:
        self.net.timers.pop(handle, None)

    def _dispatch(self, msg: Message) -> None:
        net = self.net
        net.delivered.setdefault(id(self._proto.host), []).append(msg)
        if net.release:
            msg._release_throttles()
        else:
            net.held.append(msg)

    def _notify(self, event: ConnEvent) -> None:
        pass   # in net.log

    def _faulted(self, reason: str, error: Exception | None, notable: bool = False) -> None:
        pass   # in net.log

    def _report_discarded(self, msgs: tuple) -> None:
        pass   # in net.log

    def _take_handoff(self) -> Link | None:
        return self.net.link.pop(self._proto, None)

    def _claim_handoff(self, link: Link) -> tuple[EntityAddr, EntityAddr] | None:
        return None if link.dead else link.socks

    def _drop_handoff(self, link: Link) -> None:
        link.closed[1] = True   # the accepting end (index 1) is closed
        link.ends[1] = None
        link.pipes[1].clear()

    def _install_handoff(self, link: Link) -> None:
        link.ends[1] = self._proto   # the temporary connection was the accepting end
        self.net.link[self._proto] = link

    def _contract_broken(self, text: str) -> None:
        self.net.anomalies.append(f"{self._proto!r}: {text}")

    def _registered(self) -> None:
        pass

    def _released(self) -> None:
        pass

    def _unregister(self, reason: str) -> None:
        self._proto.host.unregister_conn(self._proto)


class WireNet:
    """Deterministic in-memory network of FakeHosts running ProtocolV1 machines."""

    def __init__(self, seed: int = 0, max_chunk: int = 1 << 16, min_chunk: int = 1,
                 release_throttles: bool = True) -> None:
        self.rng = random.Random(seed)
        self.now_us = 0
        self.max_chunk, self.min_chunk = max_chunk, min_chunk
        self.release = release_throttles
        self.hosts: dict[tuple[str, int], FakeHost] = {}
        self.down: set[tuple[str, int]] = set()
        self.link: dict[ProtocolV1, Link] = {}
        self.timers: dict[tuple[ProtocolV1, TimerKind], int] = {}
        self.pending: deque[Callable[[], None]] = deque()
        self.log: list[tuple[ProtocolV1, object]] = []
        self.delivered: dict[int, list[Message]] = {}   # id(host) -> messages, in delivery order
        self.held: list[Message] = []                   # messages whose throttles are not released yet
        self.protos: list[ProtocolV1] = []
        self.anomalies: list[str] = []                  # owner-contract breaks (WireConn._contract_broken)
        self._next_port = 40000

    # --- setup -------------------------------------------------------------------------------------
    def add_host(self, host: FakeHost) -> FakeHost:
        a = host.get_myaddr()
        if a.port:
            self.hosts[(a.ip, a.port)] = host
        self.delivered.setdefault(id(host), [])
        return host

    def messages(self, host: FakeHost) -> list[Message]:
        return self.delivered[id(host)]

    def connect(self, host: FakeHost, peer_addr: EntityAddr, peer_type: int) -> ProtocolV1:
        proto = WireConn(self, host)._proto
        self.apply(proto, proto.start_connect(peer_addr, peer_type, self.now_us))
        return proto

    def send(self, proto: ProtocolV1, msg: Message) -> None:
        self.apply(proto, proto.send_message(msg, self.now_us))

    def events(self, proto: ProtocolV1 | None = None, kind: type | None = None) -> list:
        return [a for p, a in self.log if (proto is None or p is proto) and (kind is None or isinstance(a, kind))]

    # --- the owner's duties (performed by each protocol's WireConn) -------------------------------------
    def apply(self, proto: ProtocolV1, actions: list) -> None:
        self.log.extend((proto, a) for a in actions)
        proto.connection._handle(actions)

    def _open(self, proto: ProtocolV1, addr: EntityAddr) -> None:
        key = (addr.ip, addr.port)
        host = self.hosts.get(key)
        if host is None or key in self.down:
            self.apply(proto, proto.on_socket_error("connection refused", self.now_us, refused=True))
            return
        self._next_port += 1
        mine = proto.host.get_myaddr()
        local = EntityAddr(EntityAddr.TYPE_LEGACY, 0, "127.0.0.1" if mine.is_blank_ip() else mine.ip,
                           self._next_port)
        server = WireConn(self, host)._proto
        link = Link(proto, server, (local, EntityAddr(EntityAddr.TYPE_LEGACY, 0, addr.ip, addr.port)))
        self.link[proto] = link
        self.link[server] = link
        self.apply(server, server.start_accept(local, link.socks[1], self.now_us))
        self.apply(proto, proto.on_connected(local, self.now_us))

    def _close_end(self, proto: ProtocolV1) -> None:
        link = self.link.pop(proto, None)
        if link is None:
            return
        i = link.index(proto)
        link.closed[i] = True
        link.ends[i] = None
        link.pipes[i].clear()   # bytes still travelling to a closed socket are lost

    def _socket_error(self, proto: ProtocolV1, reason: str) -> None:
        self.apply(proto, proto.on_socket_error(reason, self.now_us))

    def break_link(self, proto: ProtocolV1, reason: str = "injected connection reset") -> bool:
        """Both ends of ``proto``'s link see a socket error (in-flight bytes are lost)."""
        link = self.link.get(proto)
        if link is None:
            return False
        for end in list(link.ends):
            if end is not None:
                self.link.pop(end, None)
                self.pending.append(functools.partial(self._socket_error, end, reason))
        link.ends = [None, None]
        link.dead = True
        link.pipes[0].clear()
        link.pipes[1].clear()
        return True

    # --- running ----------------------------------------------------------------------------------------
    def step(self) -> bool:
        """One round: pending callbacks, outputs, one chunk per pipe, EOFs. False if nothing happened."""
        progress = False
        while self.pending:
            self.pending.popleft()()
            progress = True
        links = list({id(lk): lk for lk in self.link.values()}.values())
        self.rng.shuffle(links)
        for link in links:
            for i in (0, 1):
                p = link.ends[i]
                if p is not None and self.link.get(p) is link and p.has_output():
                    data = b"".join(bytes(b) if not isinstance(b, bytes) else b for b in p.take_output())
                    if data and not link.closed[1 - i] and link.ends[1 - i] is not None:
                        link.pipes[1 - i].append(memoryview(data))
                    progress = True
            for i in (0, 1):
                p = link.ends[i]
                if p is None or self.link.get(p) is not link:
                    continue
                pipe = link.pipes[i]
                if pipe and p.wants_read:
                    self._deliver_chunk(p, pipe)
                    progress = True
                elif not pipe and link.closed[1 - i] and not link.eof_sent[i]:
                    link.eof_sent[i] = True
                    self.apply(p, p.buffer_updated(0, self.now_us))
                    progress = True
        self.now_us += 1
        return progress

    def _deliver_chunk(self, p: ProtocolV1, pipe: deque) -> None:
        want = self.rng.randint(self.min_chunk, self.max_chunk)
        while want > 0 and pipe and p.wants_read and self.link.get(p) is not None:
            head = pipe[0]
            buf = p.get_buffer()
            n = min(len(buf), len(head), want)
            buf[:n] = head[:n]
            if n == len(head):
                pipe.popleft()
            else:
                pipe[0] = head[n:]
            want -= n
            self.apply(p, p.buffer_updated(n, self.now_us))

    def fire_next_timer(self) -> bool:
        if not self.timers:
            return False
        (proto, kind), due = min(self.timers.items(), key=lambda kv: kv[1])
        del self.timers[(proto, kind)]
        self.now_us = max(self.now_us, due)
        proto.connection._on_timer(kind)
        return True

    def run(self, until: Callable[[], bool] | None = None, max_steps: int = 1_000_000,
            max_time_us: int | None = None) -> int:
        """Step until ``until()`` holds, or nothing is left to do (timers included); returns steps."""
        deadline = None if max_time_us is None else self.now_us + max_time_us
        for n in range(max_steps):
            if until is not None and until():
                return n
            if not self.step():
                if deadline is not None and self.timers and min(self.timers.values()) > deadline:
                    return n
                if not self.fire_next_timer():
                    return n
        raise RuntimeError(f"WireNet.run did not settle in {max_steps} steps")
