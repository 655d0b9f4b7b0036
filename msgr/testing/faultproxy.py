"""A fault-injecting TCP proxy for tests: delays, stalls, splits, resets, half-closes, black holes.

One thread runs a ``selectors`` loop; every accepted client gets its own
connection to ``target``. Each direction of a connection is a :class:`_Pipe`
holding a FIFO of chunks with release times, so random per-chunk delays
never reorder bytes. Faults are set while running from any thread; the
one-shot actions (``stall``, ``reset_all``, ``half_close``, ``black_hole``)
run on the proxy thread and the call returns once they took effect.

Randomness comes from ``random.Random(seed)`` used only by the proxy thread:
the same seed gives the same sequence of decisions, though chunk boundaries
(and so where a decision lands in the byte stream) depend on the kernel.
"""
from __future__ import annotations

import collections
import enum
import errno
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, cast

__all__ = ["FaultProxy", "Direction"]

_RECV_SIZE = 65536
_MAX_QUEUED = 4 << 20     # stop reading a source while this much waits for its destination
_SOFT_ERRORS = (BlockingIOError, InterruptedError)


class Direction(enum.Enum):
    """Which way bytes flow through the proxy."""
    TO_TARGET = "to_target"   # client -> target
    TO_CLIENT = "to_client"   # target -> client


def _now_ms() -> float:
    return time.monotonic() * 1000.0


def _hard_reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0 so the peer gets an RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pipe:
    """One direction of a proxied connection."""

    def __init__(self, conn: _Conn, direction: Direction, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.direction = direction
        self.src, self.dst = src, dst
        self.queue: collections.deque[list[Any]] = collections.deque()   # [release_ms, bytes]
        self.queued = 0
        self.last_release_ms = 0.0
        self.stall_until_ms = 0.0
        self.src_eof = False       # src sent FIN
        self.dst_shut = False      # we sent FIN (or half-closed) towards dst
        self.swallow = False       # half-closed by a fault: read and drop
        self.blocked = False       # dst send hit EAGAIN; wait for writable

    def wants_read(self) -> bool:
        return not self.src_eof and self.queued < _MAX_QUEUED

    def done(self) -> bool:
        return self.dst_shut and (self.src_eof or self.swallow)


class _Conn:
    def __init__(self, cid: int, client: socket.socket, upstream: socket.socket) -> None:
        self.cid = cid
        self.client, self.upstream = client, upstream
        self.connected = False                  # upstream connect finished
        self.black_holed = False
        self.reset_budget: int | None = None    # bytes left before a planned reset
        self.up = _Pipe(self, Direction.TO_TARGET, client, upstream)
        self.down = _Pipe(self, Direction.TO_CLIENT, upstream, client)
        self.closed = False

    def pipes(self) -> tuple[_Pipe, _Pipe]:
        return self.up, self.down


class FaultProxy:
    """Forward TCP connections from ``listen`` to ``target`` while injecting faults.

    Counters (``stats()``): connections, resets, stalls, delayed_chunks,
    split_sends, half_closes, black_holes, bytes_to_target, bytes_to_client,
    bytes_swallowed, connect_failures.
    """

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 seed: int | None = None) -> None:
        self.target = target
        self._listen_addr = listen
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # fault settings, read by the proxy thread on every decision
        self._delay_ms = (0.0, 0.0)
        self._stall_p, self._stall_ms = 0.0, (0.0, 0.0)
        self._split = False
        self._reset_after: int | None = None
        self._reset_p = 0.0
        self._black_hole_new = False
        self._stats = dict.fromkeys(
            ("connections", "resets", "stalls", "delayed_chunks", "split_sends", "half_closes",
             "black_holes", "bytes_to_target", "bytes_to_client", "bytes_swallowed",
             "connect_failures"), 0)
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 0
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self.addr: tuple[str, int] = listen

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind, listen and start the proxy thread; ``addr`` is then the real address."""
        family = socket.AF_INET6 if ":" in self._listen_addr[0] else socket.AF_INET
        ls = socket.create_server(self._listen_addr, family=family, backlog=128)
        ls.setblocking(False)
        self._listener = ls
        self.addr = ls.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(ls, selectors.EVENT_READ, ("accept", None))
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"faultproxy:{self.addr[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every socket (connections get an RST)."""
        if not self._running:
            return
        self._running = False
        self._wake()
        assert self._thread is not None
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start() if not self._running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fault controls (any thread) ---------------------------------------------
    def set_delay(self, min_ms: float, max_ms: float | None = None) -> None:
        """Delay each chunk by a random time in [min_ms, max_ms]; order is kept."""
        with self._lock:
            self._delay_ms = (float(min_ms), float(min_ms if max_ms is None else max_ms))

    def set_random_stalls(self, probability: float, min_ms: float, max_ms: float) -> None:
        """Per chunk, with ``probability``, pause that direction for [min_ms, max_ms]."""
        with self._lock:
            self._stall_p, self._stall_ms = float(probability), (float(min_ms), float(max_ms))

    def set_split(self, enabled: bool = True) -> None:
        """Forward one byte per ``send`` call."""
        with self._lock:
            self._split = enabled

    def set_reset_after(self, nbytes: int | None) -> None:
        """Reset each connection (current ones counted from now) after ``nbytes`` forwarded bytes.

        Exactly ``nbytes`` bytes (both directions summed) get through, then both
        sides see an RST. ``None`` disarms it.
        """
        with self._lock:
            self._reset_after = nbytes

        def run() -> None:
            for c in self._conns.values():
                c.reset_budget = nbytes
        self._call(run)

    def set_reset_probability(self, p: float) -> None:
        """Per chunk, with probability ``p``, forward a random prefix of it and reset."""
        with self._lock:
            self._reset_p = float(p)

    def stall(self, ms: float, direction: Direction | None = None) -> None:
        """Pause forwarding on all current connections for ``ms`` (one or both directions)."""
        def run() -> None:
            until = _now_ms() + ms
            for c in self._conns.values():
                for p in c.pipes():
                    if direction in (None, p.direction):
                        p.stall_until_ms = max(p.stall_until_ms, until)
            self._stats["stalls"] += 1
        self._call(run)

    def half_close(self, direction: Direction) -> None:
        """Send FIN in ``direction`` on all current connections; later bytes that way are dropped."""
        def run() -> None:
            for c in list(self._conns.values()):
                p = c.up if direction is Direction.TO_TARGET else c.down
                if p.dst_shut:
                    continue
                p.swallow = True
                p.queue.clear()
                p.queued = 0
                self._shut_dst(p)
                self._stats["half_closes"] += 1
                self._maybe_close(c)
        self._call(run)

    def black_hole(self, enabled: bool = True) -> None:
        """Swallow every byte of current (and, while enabled, new) connections; keep sockets open."""
        def run() -> None:
            self._black_hole_new = enabled
            if enabled:
                for c in self._conns.values():
                    self._black_hole_conn(c)
        self._call(run)

    def reset_all(self) -> None:
        """RST every current connection now."""
        def run() -> None:
            for c in list(self._conns.values()):
                self._reset(c)
        self._call(run)

    def stats(self) -> dict[str, int]:
        """A copy of the injection and traffic counters."""
        with self._lock:
            return dict(self._stats)

    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    # --- cross-thread plumbing -----------------------------------------------------
    def _wake(self) -> None:
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass   # a wake-up is already pending, or we are stopping

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the proxy thread and wait for it (inline if not running)."""
        if not self._running or threading.current_thread() is self._thread:
            fn()
            return
        done = threading.Event()

        def wrapped() -> None:
            try:
                fn()
            finally:
                done.set()
        self._commands.append(wrapped)
        self._wake()
        done.wait(10)

    # --- proxy thread --------------------------------------------------------------
    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while self._running:
                timeout = self._flush_all()
                for key, mask in sel.select(timeout):
                    kind, obj = key.data
                    if kind == "accept":
                        self._accept()
                    elif kind == "wake":
                        self._drain_wake()
                    else:
                        self._on_socket(obj, cast(socket.socket, key.fileobj), mask)
                while self._commands:
                    self._commands.popleft()()
        finally:
            for c in list(self._conns.values()):
                self._drop(c, reset=True)
            for s in (self._listener, self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            sel.close()
            while self._commands:   # release callers waiting on a command
                self._commands.popleft()()

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except _SOFT_ERRORS:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except _SOFT_ERRORS:
                return
            except OSError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.socket(socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET,
                               socket.SOCK_STREAM)
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_cid += 1
            c = _Conn(self._next_cid, client, up)
            with self._lock:
                self._conns[c.cid] = c
                self._stats["connections"] += 1
                c.reset_budget = self._reset_after
            err = up.connect_ex(self.target)
            if err not in (0, errno.EINPROGRESS):
                self._connect_failed(c)
                continue
            assert self._sel is not None
            self._sel.register(client, selectors.EVENT_READ, ("sock", c))
            self._sel.register(up, selectors.EVENT_WRITE, ("sock", c))
            if self._black_hole_new:
                self._black_hole_conn(c)

    def _connect_failed(self, c: _Conn) -> None:
        with self._lock:
            self._stats["connect_failures"] += 1
        self._drop(c, reset=True)

    def _on_socket(self, c: _Conn, sock: socket.socket, mask: int) -> None:
        if c.closed:
            return
        if sock is c.upstream and not c.connected:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._connect_failed(c)
                return
            c.connected = True
        if mask & selectors.EVENT_WRITE:
            for p in c.pipes():
                if p.dst is sock:
                    p.blocked = False
        if mask & selectors.EVENT_READ:
            for p in c.pipes():
                if p.src is sock and p.wants_read():
                    self._read(p)
                    break
        if not c.closed:
            self._update(c)

    def _read(self, p: _Pipe) -> None:
        c = p.conn
        try:
            data = p.src.recv(_RECV_SIZE)
        except _SOFT_ERRORS:
            return
        except OSError:
            self._reset(c)
            return
        if not data:
            p.src_eof = True
            if not p.queue and not p.dst_shut and c.connected and not c.black_holed:
                self._shut_dst(p)
            self._maybe_close(c)
            return
        if p.swallow or c.black_holed:
            with self._lock:
                self._stats["bytes_swallowed"] += len(data)
            return
        with self._lock:
            lo, hi = self._delay_ms
            stall_p, (smin, smax) = self._stall_p, self._stall_ms
        now = _now_ms()
        delay = self._rng.uniform(lo, hi) if hi > 0 else 0.0
        if stall_p and self._rng.random() < stall_p:
            p.stall_until_ms = max(p.stall_until_ms, now + self._rng.uniform(smin, smax))
            with self._lock:
                self._stats["stalls"] += 1
        if delay > 0:
            with self._lock:
                self._stats["delayed_chunks"] += 1
        release = max(now + delay, p.last_release_ms)   # never overtake an earlier chunk
        p.last_release_ms = release
        p.queue.append([release, data])
        p.queued += len(data)

    def _flush_all(self) -> float | None:
        """Send every due chunk; return the select timeout (s) until the next one is due."""
        next_due: float | None = None
        for c in list(self._conns.values()):
            if c.closed or not c.connected:
                continue
            for p in c.pipes():
                due = self._flush(p)
                if c.closed:
                    break
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            if not c.closed:
                self._update(c)
        if next_due is None:
            return None
        return max(0.0, (next_due - _now_ms()) / 1000.0)

    def _flush(self, p: _Pipe) -> float | None:
        """Forward due chunks of ``p``; return when (ms) the next one is due, if waiting on time."""
        c = p.conn
        while p.queue and not p.blocked:
            now = _now_ms()
            start: float = max(p.queue[0][0], p.stall_until_ms)
            if start > now:
                return start
            with self._lock:
                split, reset_p = self._split, self._reset_p
            chunk = p.queue[0][1]
            limit = len(chunk)
            reset_now = False
            if c.reset_budget is not None and c.reset_budget <= limit:
                limit, reset_now = c.reset_budget, True
            elif reset_p and self._rng.random() < reset_p:
                limit, reset_now = self._rng.randrange(len(chunk)), True
            sent = self._send(p, chunk, limit, split)
            if sent is None:
                return None     # connection reset by a send error
            if c.reset_budget is not None:
                c.reset_budget -= sent
            if reset_now and sent == limit:
                self._reset(c)
                return None
            if sent < len(chunk):
                p.queue[0][1] = chunk[sent:]
                p.queued -= sent
                p.blocked = True
                return None
            p.queue.popleft()
            p.queued -= sent
        if not p.queue and p.src_eof and not p.dst_shut and not c.black_holed:
            self._shut_dst(p)
            self._maybe_close(c)
        return None

    def _send(self, p: _Pipe, chunk: bytes, limit: int, split: bool) -> int | None:
        """Send up to ``limit`` bytes of ``chunk``; None if the connection died."""
        sent, dead = 0, False
        try:
            if split:
                while sent < limit:
                    sent += p.dst.send(chunk[sent:sent + 1])
            elif limit:
                sent = p.dst.send(chunk[:limit])
        except _SOFT_ERRORS:
            pass
        except OSError:
            dead = True
        key = "bytes_to_target" if p.direction is Direction.TO_TARGET else "bytes_to_client"
        with self._lock:
            self._stats[key] += sent
            if split:
                self._stats["split_sends"] += sent
        if dead:
            self._reset(p.conn)
            return None
        return sent

    def _update(self, c: _Conn) -> None:
        """Re-register both sockets with the events they need now."""
        assert self._sel is not None
        for sock in (c.client, c.upstream):
            mask = 0
            if sock is c.upstream and not c.connected:
                mask = selectors.EVENT_WRITE
            else:
                for p in c.pipes():
                    if p.src is sock and p.wants_read():
                        mask |= selectors.EVENT_READ
                    if p.dst is sock and p.blocked:
                        mask |= selectors.EVENT_WRITE
            key = self._sel.get_map().get(sock)
            if mask and key is None:
                self._sel.register(sock, mask, ("sock", c))
            elif mask and key is not None and key.events != mask:
                self._sel.modify(sock, mask, ("sock", c))
            elif not mask and key is not None:
                self._sel.unregister(sock)

    def _shut_dst(self, p: _Pipe) -> None:
        p.dst_shut = True
        try:
            p.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _black_hole_conn(self, c: _Conn) -> None:
        if c.black_holed:
            return
        c.black_holed = True
        for p in c.pipes():
            p.queue.clear()
            p.queued = 0
        with self._lock:
            self._stats["black_holes"] += 1

    def _maybe_close(self, c: _Conn) -> None:
        if not c.closed and c.up.done() and c.down.done():
            self._drop(c, reset=False)

    def _reset(self, c: _Conn) -> None:
        if not c.closed:
            with self._lock:
                self._stats["resets"] += 1
            self._drop(c, reset=True)

    def _drop(self, c: _Conn, reset: bool) -> None:
        c.closed = True
        with self._lock:
            self._conns.pop(c.cid, None)
        for sock in (c.client, c.upstream):
            if self._sel is not None and sock in self._sel.get_map():
                self._sel.unregister(sock)
            if reset:
                _hard_reset(sock)
            else:
                sock.close()
