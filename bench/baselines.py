"""Same-run baselines: the loopback TCP limit and a bare msgr-v1 framing loop.

Every pymsgr figure in the table is divided by one of these, measured minutes earlier on the same
box, because run-to-run noise on a shared 2-vCPU VM is larger than most of the effects we steer by.

* ``loopback_limit``: one TCP stream over 127.0.0.1, a sender thread doing ``sendall`` of 1 MiB and
  a receiver thread doing ``recv_into`` a preallocated buffer. No framing, no CRC: the ceiling.
* ``framed_throughput`` / ``framed_rtt``: the smallest honest program that speaks msgr v1's OPEN-state
  framing (tag 7 + 53-byte header with its CRC-32C + front + 21-byte footer with the front CRC,
  checked on receipt; one TAG_ACK per receive batch), both ends in one process on one event loop
  (asyncio's default loop or uvloop). A messenger does strictly more per message than this, so it
  beats it only by doing less Python per message.
"""
from __future__ import annotations

import asyncio
import gc
import socket
import struct
import threading
import time
from collections.abc import Callable

from msgr.crc import crc32c

try:  # the C header packer lands with msgr/_cwire.py; plain struct + CRC is the same bytes
    from msgr._cwire import pack_header, parse_header
except ImportError:  # pragma: no cover - only before msgr/_cwire.py existed
    _HDR49 = struct.Struct("<QQHHHIIIHBQHH")
    _HDR = struct.Struct("<QQHHHIIIHBqHHI")

    def pack_header(seq, tid, type, priority, version, front_len, middle_len, data_len,  # noqa: A002
                    data_off, src_type, src_num, compat_version, reserved=0) -> bytes:
        head = _HDR49.pack(seq, tid, type, priority, version, front_len, middle_len, data_len,
                           data_off, src_type, src_num % (1 << 64), compat_version, reserved)
        return head + struct.pack("<I", crc32c(0, head))

    def parse_header(buf, offset=0, check_crc=True) -> tuple:
        t = _HDR.unpack_from(buf, offset)
        if check_crc and crc32c(0, memoryview(buf)[offset:offset + 49]) != t[13]:
            raise ValueError("bad header crc")
        return t

__all__ = ["loopback_limit", "framed_throughput", "framed_rtt", "LOOPS", "loop_factory", "handshake_row",
           "percentiles"]

TAG_MSG, TAG_ACK = 7, 8
HEADER_SIZE, FOOTER_SIZE = 53, 21
_TAG_MSG_B = bytes((TAG_MSG,))
_FOOTER = struct.Struct("<IIIQB")
_ACK = struct.Struct("<BQ")
_U64 = struct.Struct("<Q")
_MiB = 1 << 20
MSG_TYPE = 0x7F01   # an otherwise unused message type


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/p999 in microseconds of round-trip samples given in seconds."""
    if not samples_s:
        return {"p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0}
    s = sorted(samples_s)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, int(q * n))] * 1e6

    return {"p50_us": at(0.50), "p99_us": at(0.99), "p999_us": at(0.999)}


# --- (1) loopback TCP limit ------------------------------------------------------------------

def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    lst = socket.create_server(("127.0.0.1", 0))
    try:
        a = socket.create_connection(lst.getsockname())
        b, _ = lst.accept()
    finally:
        lst.close()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def loopback_limit(total_bytes: int = 2 << 30, chunk: int = _MiB) -> dict:
    """One TCP stream, sender ``sendall`` / receiver ``recv_into`` in two threads."""
    tx, rx = _tcp_pair()
    payload = bytes(chunk)
    n_chunks = max(1, total_bytes // chunk)
    total = n_chunks * chunk
    got = [0]

    def receive() -> None:
        buf = bytearray(chunk)
        mv = memoryview(buf)
        n = 0
        while n < total:
            r = rx.recv_into(mv)
            if not r:
                break
            n += r
        got[0] = n

    t = threading.Thread(target=receive, name="loopback-rx")
    cpu0 = _cpu()
    t0 = time.perf_counter()
    t.start()
    for _ in range(n_chunks):
        tx.sendall(payload)
    t.join()
    elapsed = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    tx.close()
    rx.close()
    return {"case": "baseline.loopback_tcp", "size": chunk, "messages": n_chunks,
            "elapsed_s": elapsed, "msgs_per_s": n_chunks / elapsed,
            "mb_per_s": got[0] / elapsed / 1e6, "cpu_s_per_gb": cpu / (got[0] / 1e9)}


def _cpu() -> float:
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- (2) minimal framed msgr-v1 stream on one event loop -----------------------------------------

def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``asyncio`` (the default selector loop) or ``uvloop``; None if uvloop is missing."""
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    raise ValueError(f"unknown loop {name!r}")


LOOPS = ("asyncio", "uvloop")


def _frame(seq: int, front: bytes, front_crc: int) -> bytes:
    hdr = pack_header(seq, 0, MSG_TYPE, 127, 1, len(front), 0, 0, 0, 8, 4100, 1)
    return b"".join((_TAG_MSG_B, hdr, front, _FOOTER.pack(front_crc, 0, 0, 0, 1)))


class _FrameReader(asyncio.BufferedProtocol):
    """Receives framed messages into one preallocated buffer (``recv_into`` underneath)."""

    def __init__(self, on_batch: Callable[[int, list], None], keep: bool, cap: int) -> None:
        self.buf = bytearray(cap)
        self.mv = memoryview(self.buf)
        self.start = self.end = 0
        self.on_batch = on_batch
        self.keep = keep          # hand the fronts to on_batch (echo needs them)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end == len(self.buf):
            self._make_room()
        return self.mv[self.end:]

    def _make_room(self) -> None:
        pending = self.end - self.start
        if self.start == 0:  # one frame larger than the buffer: grow once
            self.mv.release()
            self.buf.extend(bytes(len(self.buf)))
            self.mv = memoryview(self.buf)
            return
        self.buf[:pending] = self.mv[self.start:self.end]
        self.start, self.end = 0, pending

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        mv, pos, end = self.mv, self.start, self.end
        last_seq, fronts = 0, [] if self.keep else None
        while pos < end:
            tag = mv[pos]
            if tag == TAG_ACK:
                if end - pos < 9:
                    break
                last_seq = _U64.unpack_from(mv, pos + 1)[0]
                pos += 9
                continue
            if tag != TAG_MSG:
                raise ValueError(f"bad tag {tag}")
            if end - pos < 1 + HEADER_SIZE:
                break
            h = parse_header(mv, pos + 1)          # struct + header CRC check
            flen = h[5]
            f0 = pos + 1 + HEADER_SIZE
            total = 1 + HEADER_SIZE + flen + FOOTER_SIZE
            if end - pos < total:
                break
            fcrc = _FOOTER.unpack_from(mv, f0 + flen)[0]
            front = mv[f0:f0 + flen]
            if crc32c(0, front) != fcrc:
                raise ValueError("bad front crc")
            if fronts is not None:
                fronts.append(bytes(front))
            front.release()
            last_seq = h[0]
            pos += total
        self.start = pos
        if pos == end:
            self.start = self.end = 0
        if last_seq:
            self.on_batch(last_seq, fronts)


class _Sender(asyncio.Protocol):
    """Keeps ``window`` messages in flight, honours write back-pressure, counts acks."""

    def __init__(self, front: bytes, window: int, count: int, deadline: float,
                 done: asyncio.Future) -> None:
        self.front, self.front_crc = front, crc32c(0, front)
        self.window, self.count, self.deadline = window, count, deadline
        self.done = done
        self.sent = self.acked = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.fill()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.fill()

    def data_received(self, data: bytes) -> None:
        # only 9-byte TAG_ACKs come back on this connection
        pending = self.pending
        pending += data
        n = len(pending) // 9
        if n:
            seq = _U64.unpack_from(pending, (n - 1) * 9 + 1)[0]
            del pending[:n * 9]
            self._on_ack(seq, None)

    def _on_ack(self, seq: int, _fronts) -> None:
        self.acked = seq
        if self.acked >= self.sent and (self.sent >= self.count
                                        or time.perf_counter() >= self.deadline):
            if not self.done.done():
                self.done.set_result(self.acked)
            return
        self.fill()

    def fill(self) -> None:
        if self.paused or self.sent >= self.count:
            return
        if time.perf_counter() >= self.deadline:
            self.count = self.sent   # stop issuing; the last ack finishes the run
            return
        n = min(self.window - (self.sent - self.acked), self.count - self.sent)
        if n <= 0:
            return
        front, fcrc, seq = self.front, self.front_crc, self.sent
        if len(front) < _MiB:
            frames = [_frame(seq + i + 1, front, fcrc) for i in range(n)]
            self.sent += n
            self.transport.write(frames[0] if n == 1 else b"".join(frames))
            return
        # large fronts: no join copy, and stop as soon as the transport asks us to
        write = self.transport.write
        footer = _FOOTER.pack(fcrc, 0, 0, 0, 1)
        for _ in range(n):
            self.sent += 1
            write(_TAG_MSG_B + pack_header(self.sent, 0, MSG_TYPE, 127, 1, len(front), 0, 0, 0,
                                           8, 4100, 1))
            write(front)
            write(footer)
            if self.paused:
                break


async def _serve_sink(loop, reader_factory) -> tuple[asyncio.AbstractServer, tuple]:
    server = await loop.create_server(reader_factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()


async def _throughput(size: int, window: int, count: int, duration: float) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    readers: list[_FrameReader] = []

    def make_reader() -> _FrameReader:
        def ack(seq: int, _fronts) -> None:
            r.transport.write(_ACK.pack(TAG_ACK, seq))   # one ack per receive batch
        r = _FrameReader(ack, False, max(4 * _MiB, 2 * (size + 128)))
        readers.append(r)
        return r

    server, addr = await _serve_sink(loop, make_reader)
    done = loop.create_future()
    t0 = time.perf_counter()
    transport, _ = await loop.create_connection(
        lambda: _Sender(bytes(size), window, count, t0 + duration, done), *addr)
    n = await done
    elapsed = time.perf_counter() - t0
    transport.close()
    server.close()
    await server.wait_closed()
    return n, elapsed


def framed_throughput(loop_name: str, size: int, window: int = 128, count: int = 10**9,
                      duration: float = 0.5) -> dict | None:
    """One-way msgs/s and MB/s of the bare framing loop (None if the loop is unavailable)."""
    factory = loop_factory(loop_name)
    if factory is None:
        return None
    loop = factory()
    try:
        cpu0, gc0 = _cpu(), gc_collections()
        n, elapsed = loop.run_until_complete(_throughput(size, window, count, duration))
        cpu, gcs = _cpu() - cpu0, gc_collections()
    finally:
        loop.close()
    nbytes = n * size
    return {"case": f"baseline.framed_{loop_name}", "size": size, "messages": n,
            "window": window, "elapsed_s": elapsed, "msgs_per_s": n / elapsed,
            "mb_per_s": nbytes / elapsed / 1e6,
            "cpu_s_per_gb": cpu / (nbytes / 1e9) if nbytes else None,
            **gc_per_10k(gc0, gcs, n)}


def gc_collections() -> tuple[int, ...]:
    """Garbage-collector runs so far, per generation."""
    return tuple(g["collections"] for g in gc.get_stats())


def gc_per_10k(before: tuple[int, ...], after: tuple[int, ...], messages: int) -> dict:
    """Garbage-collector runs of this process per 10k messages, per generation (``gc_gen0_per_10k``
    ...); the issue's measure of per-message garbage, stored in every throughput and RTT row."""
    return {f"gc_gen{i}_per_10k": round((a - b) * 10_000 / messages, 2) if messages else None
            for i, (b, a) in enumerate(zip(before, after, strict=True))}


async def _rtt(size: int, count: int, duration: float) -> list[float]:
    loop = asyncio.get_running_loop()
    front = bytes(size)
    fcrc = crc32c(0, front)

    def make_echo() -> _FrameReader:
        def echo(seq: int, fronts) -> None:
            for f in fronts:
                r.transport.write(_frame(seq, f, crc32c(0, f)))
        r = _FrameReader(echo, True, 1 << 16)
        return r

    server, addr = await _serve_sink(loop, make_echo)
    samples: list[float] = []
    done = loop.create_future()
    deadline = time.perf_counter() + duration
    state = {"t": 0.0, "seq": 0}
    client = _FrameReader(lambda seq, _f: on_reply(), False, 1 << 16)

    def send_one() -> None:
        state["seq"] += 1
        state["t"] = time.perf_counter()
        client.transport.write(_frame(state["seq"], front, fcrc))

    def on_reply() -> None:
        now = time.perf_counter()
        samples.append(now - state["t"])
        if len(samples) >= count or now >= deadline:
            if not done.done():
                done.set_result(None)
            return
        send_one()

    transport, _ = await loop.create_connection(lambda: client, *addr)
    send_one()
    await done
    transport.close()
    server.close()
    await server.wait_closed()
    return samples


def framed_rtt(loop_name: str, size: int = 16, count: int = 10**9,
               duration: float = 0.5) -> dict | None:
    """Round trip with one message in flight: framed request, framed echo."""
    factory = loop_factory(loop_name)
    if factory is None:
        return None
    loop = factory()
    try:
        gc0 = gc_collections()
        samples = loop.run_until_complete(_rtt(size, count, duration))
        gcs = gc_collections()
    finally:
        loop.close()
    row = {"case": f"baseline.framed_{loop_name}.rtt", "size": size, "messages": len(samples),
           "msgs_per_s": len(samples) / sum(samples) if samples else 0.0,
           "mb_per_s": len(samples) * size / sum(samples) / 1e6 if samples else 0.0,
           **gc_per_10k(gc0, gcs, 2 * len(samples))}
    row.update(percentiles(samples))
    return row


# --- (3) keepalive2 round trips against a real ceph-mon ----------------------------------------

class RawV1Client:
    """A blocking msgr v1 client built on ``msgr.wire`` only: handshake, then KEEPALIVE2 pings.

    It measures any v1 server the same way (a real ceph-mon or a pymsgr messenger), and it is
    how the idle-connection case opens 1,000 sessions without 1,000 client messengers.
    """

    def __init__(self, host: str, port: int, host_type: int = 8, peer_type: int = 1,
                 lossy: bool = True, nonce: int = 0, timeout: float = 5.0) -> None:
        from msgr import wire
        from msgr.entity import EntityAddr
        from msgr.features import FEATURES_SUPPORTED_DEFAULT
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = self.sock
        s.sendall(wire.BANNER)
        wire.unpack_server_identify(self._recv(wire.SERVER_IDENTIFY_SIZE))
        me = EntityAddr.parse("v1:127.0.0.1:0").with_nonce(nonce or (id(self) & 0x7FFFFFFF))
        connect = wire.ConnectMsg(features=FEATURES_SUPPORTED_DEFAULT, host_type=host_type,
                                  global_seq=1, connect_seq=0,
                                  protocol_version=wire.proto_version(host_type, peer_type, True),
                                  flags=wire.CONNECT_LOSSY if lossy else 0)
        s.sendall(me.encode_legacy() + connect.pack())
        reply = wire.ConnectReply.unpack(self._recv(wire.ConnectReply.SIZE))
        if reply.authorizer_len:
            self._recv(reply.authorizer_len)
        if reply.tag == wire.Tag.SEQ:
            self._recv(8)
            s.sendall(struct.pack("<Q", 0))
        elif reply.tag != wire.Tag.READY:
            raise ConnectionError(f"handshake refused with tag {reply.tag}")
        self.features = reply.features & FEATURES_SUPPORTED_DEFAULT
        self._ka = struct.Struct("<BII")

    def _recv(self, n: int) -> bytearray:
        buf = bytearray(n)
        mv, got = memoryview(buf), 0
        while got < n:
            r = self.sock.recv_into(mv[got:])
            if not r:
                raise ConnectionError("peer closed")
            got += r
        return buf

    def keepalive2_rtt(self, count: int = 10**9, duration: float = 0.5) -> list[float]:
        """Sequential KEEPALIVE2 → KEEPALIVE2_ACK round trips (seconds); skips other frames."""
        samples: list[float] = []
        deadline = time.perf_counter() + duration
        s, pack = self.sock, self._ka.pack
        while len(samples) < count and time.perf_counter() < deadline:
            now = time.time()
            t0 = time.perf_counter()
            s.sendall(pack(14, int(now), int(now % 1 * 1e9)))
            while True:
                tag = self._recv(1)[0]
                if tag == 15:
                    self._recv(8)
                    break
                if tag == 8:
                    self._recv(8)
                elif tag == TAG_MSG:
                    h = parse_header(self._recv(HEADER_SIZE))
                    flen = FOOTER_SIZE if self.features & (1 << 23) else 13
                    self._recv(h[5] + h[6] + h[7] + flen)
                else:
                    raise ConnectionError(f"unexpected tag {tag}")
            samples.append(time.perf_counter() - t0)
        return samples

    def close(self) -> None:
        self.sock.close()


def start_ceph_mon():
    """A throwaway real monitor (tests/cephmon.py) or None when ceph-mon is not installed."""
    import shutil
    if shutil.which("ceph-mon") is None or shutil.which("monmaptool") is None:
        return None
    import importlib
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    cephmon = importlib.import_module("tests.cephmon")
    return cephmon.CephMon().start()


def handshake_row(case: str, host: str, port: int, peer_type: int, duration: float,
                  client: str = "rawv1", windows: int = 3) -> dict:
    """Handshakes (TCP connect -> READY, lossy) by the raw v1 client against ``host:port``, one
    after another, each socket closed before the next: the best-p50 of ``windows``, as
    :func:`keepalive2_row` (the server's teardown of one session overlaps the next connect, as
    it would for a stream of short-lived clients)."""
    def window(seconds: float) -> list[float]:
        samples: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            c = RawV1Client(host, port, host_type=8, peer_type=peer_type, lossy=True)
            samples.append(time.perf_counter() - t0)
            c.close()
        return samples
    window(0.2)                                               # warm-up
    runs = [window(duration / windows) for _ in range(windows)]
    samples = min(runs, key=lambda r: percentiles(r)["p50_us"])
    row = {"case": case, "size": None, "kind": "handshake", "client": client, "windows": windows,
           "messages": len(samples), "msgs_per_s": len(samples) / sum(samples), "mb_per_s": None}
    row.update(percentiles(samples))
    return row


def keepalive2_row(case: str, host: str, port: int, peer_type: int, duration: float,
                   client: str = "rawv1", windows: int = 3) -> dict:
    """Keepalive2 RTT by the raw v1 client against ``host:port``: the best-p50 of ``windows``.

    Best-of-N because a freshly started ceph-mon is busy for a while; both the mon and the pymsgr
    server get the same treatment, so the ratio stays fair.
    """
    c = RawV1Client(host, port, host_type=8, peer_type=peer_type, lossy=True)
    try:
        c.keepalive2_rtt(count=200, duration=0.2)           # warm-up
        runs = [c.keepalive2_rtt(duration=duration / windows) for _ in range(windows)]
    finally:
        c.close()
    samples = min(runs, key=lambda r: percentiles(r)["p50_us"])
    row = {"case": case, "size": 9, "kind": "keepalive2", "client": client, "windows": windows,
           "messages": len(samples), "msgs_per_s": len(samples) / sum(samples),
           "mb_per_s": None}
    row.update(percentiles(samples))
    return row
