"""An in-memory harness joining ProtocolV1 machines through byte pipes.

``WireNet`` plays every owner duty of the protocol contract without sockets
or threads: OpenSocket makes a link to the host listening at that address
(or reports ECONNREFUSED), output is pulled after every call and delivered
to the other end in chunks of random size, timers run on a virtual clock,
ReplaceExisting moves a link to the existing session, and so on. Everything
is driven by one seeded RNG, so a run is reproducible from its seed.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Callable

from msgr.entity import EntityAddr
from msgr.message import Message
from msgr.protocol.actions import (ArmTimer, CancelTimer, CloseSocket, Deliver, OpenSocket, PokeExisting,
                                   ReplaceExisting, StopExisting, TimerKind)
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
        proto = ProtocolV1(host)
        self.protos.append(proto)
        self.apply(proto, proto.start_connect(peer_addr, peer_type, self.now_us))
        return proto

    def send(self, proto: ProtocolV1, msg: Message) -> None:
        self.apply(proto, proto.send_message(msg, self.now_us))

    def events(self, proto: ProtocolV1 | None = None, kind: type | None = None) -> list:
        return [a for p, a in self.log if (proto is None or p is proto) and (kind is None or isinstance(a, kind))]

    # --- the owner's duties ---------------------------------------------------------------------------
    def apply(self, proto: ProtocolV1, actions: list) -> None:
        for a in actions:
            self.log.append((proto, a))
            t = type(a)
            if t is Deliver:
                self.delivered.setdefault(id(proto.host), []).append(a.msg)
                if self.release:
                    a.msg.release_throttles()
                else:
                    self.held.append(a.msg)
            elif t is ArmTimer:
                self.timers[(proto, a.kind)] = self.now_us + a.delay_us
            elif t is CancelTimer:
                self.timers.pop((proto, a.kind), None)
            elif t is OpenSocket:
                self.pending.append(lambda p=proto, addr=a.addr: self._open(p, addr))
            elif t is CloseSocket:
                self._close_end(proto)
            elif t is ReplaceExisting:
                link = self.link.pop(proto)
                self.pending.append(lambda e=a.existing, l=link, r=a.reset_session, p=proto: self._replace(p, e, l, r))
            elif t is PokeExisting:
                self.pending.append(lambda e=a.existing: self.apply(e, e.send_keepalive(self.now_us)))
            elif t is StopExisting:
                self.pending.append(lambda e=a.existing: self.apply(e, e.fault_replaced(self.now_us)))

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
        server = ProtocolV1(host)
        self.protos.append(server)
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

    def _replace(self, temp: ProtocolV1, existing: ProtocolV1, link: Link, reset: bool) -> None:
        i = 1   # the temporary connection is always the accepting end
        self.apply(existing, existing.adopt_socket(link.socks[0], link.socks[1], self.now_us, reset))
        if link.dead:   # the socket broke while being handed over: the new owner sees the error
            self.apply(existing, existing.on_socket_error("injected connection reset", self.now_us))
            return
        link.ends[i] = existing
        self.link[existing] = link

    def break_link(self, proto: ProtocolV1, reason: str = "injected connection reset") -> bool:
        """Both ends of ``proto``'s link see a socket error (in-flight bytes are lost)."""
        link = self.link.get(proto)
        if link is None:
            return False
        for end in list(link.ends):
            if end is not None:
                self.link.pop(end, None)
                self.pending.append(lambda e=end: self.apply(e, e.on_socket_error(reason, self.now_us)))
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
        links = list({id(l): l for l in self.link.values()}.values())
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
        self.apply(proto, proto.on_timer(kind, self.now_us))
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
