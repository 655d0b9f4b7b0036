"""pymsgr benchmark cases, through the public API only (perf_msgr-like).

A client messenger sends ``MBench`` messages to one server messenger per connection (``connect_to``
returns one session per peer, so N connections need N peers). The server's dispatcher counts and
acknowledges every ``window // 4`` messages with an ``MBenchAck`` carrying the count, and the
sender keeps at most ``window`` unacknowledged messages per connection: the same in-flight rule as
the framed baseline, and it works unchanged when the server is another process.

Round trips are driven from the dispatchers themselves (reply → next request), one in flight, so
no application thread hop is counted that the baseline does not pay as well.
"""
from __future__ import annotations

import os
import resource
import struct
import threading
import time
from dataclasses import dataclass, field

from bench.baselines import RawV1Client, gc_collections, gc_per_10k, percentiles

__all__ = ["Params", "available", "pipelined", "rtt", "handshake_rate", "idle_connections",
           "keepalive2", "raw_handshakes", "NOT_AVAILABLE"]

NOT_AVAILABLE = "pymsgr messenger not available yet"
BENCH_TYPE, ACK_TYPE = 0x7F01, 0x7F02
TID_FLUSH, TID_ECHO = 1, 2      # header tid marks: "ack me now" / "echo this back"
_U64 = struct.Struct("<Q")


@dataclass
class Params:
    connections: int = 1
    workers: int = 1                 # ms_async_op_threads of every messenger
    front_size: int = 4096
    data_size: int = 0
    count: int = 10**9               # messages per case (whichever of count/duration ends first)
    duration: float = 1.0            # seconds
    window: int = 128                # messages in flight per connection
    crc: bool = True                 # ms_crc_header and ms_crc_data
    policy: str = "lossless"         # lossless | lossy
    processes: int = 1               # 2 = the server messengers run in a child process
    dispatch: str = "fast"           # fast = ms_fast_dispatch on the worker | queued = ms_dispatch
    extra: dict = field(default_factory=dict)   # "config": more Config options of every messenger

    @property
    def size(self) -> int:
        return self.front_size + self.data_size


def _api():
    """The public API module objects, or raise ImportError with the reason."""
    import msgr
    names = ("Messenger", "Config", "Policy", "EntityName", "EntityAddr", "Dispatcher", "Message")
    missing = [n for n in names if not hasattr(msgr, n)]
    if missing:
        raise ImportError(f"msgr does not export {', '.join(missing)}")
    return msgr


_AVAILABLE: list = []


def available(timeout: float = 5.0) -> str | None:
    """None when the messenger can be benchmarked (one message acked end to end), else why not.

    Probed once per process."""
    if not _AVAILABLE:
        _AVAILABLE.append(_probe(timeout))
    return _AVAILABLE[0]


def _probe(timeout: float) -> str | None:
    try:
        _api()
        _message_types()
        s = _Setup(Params(window=4))
        try:
            s.conns[0].send_message(_message(b"probe", b"", TID_FLUSH))
            if not _wait_acked(s.source, [id(s.conns[0])], [1], timeout):
                raise TimeoutError(f"no ack for a probe message within {timeout:.0f} s")
        finally:
            s.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
        return f"{NOT_AVAILABLE} ({type(exc).__name__}: {exc})"
    return None


_TYPES: tuple | None = None


def _message_types():
    global _TYPES
    if _TYPES is None:
        msgr = _api()

        class MBench(msgr.Message):
            TYPE = BENCH_TYPE

        class MBenchAck(msgr.Message):
            TYPE = ACK_TYPE

        _TYPES = (MBench, MBenchAck)
    return _TYPES


def _config(p: Params):
    msgr = _api()
    return msgr.Config(ms_async_op_threads=p.workers, ms_crc_data=p.crc, ms_crc_header=p.crc,
                       **p.extra.get("config", {}))


def _policies(p: Params):
    P = _api().Policy
    if p.policy == "lossy":
        return P.lossy_client(), P.stateless_server()
    return P.lossless_client(), P.stateful_server()


class _Sink:
    """Server dispatcher: counts, acks per batch, echoes round-trip requests."""

    def __init__(self, batch: int) -> None:
        self.batch = max(1, batch)
        self.counts: dict[object, int] = {}   # by connection
        self.accepted = 0
        self.accepted_evt = threading.Event()
        self.want_accepts = 0

    def dispatch(self, msg) -> None:
        conn = msg.get_connection()
        tid = msg.header.tid
        if tid == TID_ECHO:
            reply = _message_types()[0]()
            reply.front, reply.data = msg.front, msg.data
            reply.tid = TID_ECHO
            conn.send_message(reply)
            return
        counts = self.counts    # one connection is served by one worker thread: no race
        n = counts.get(conn, 0) + 1
        counts[conn] = n
        if n % self.batch == 0 or tid == TID_FLUSH:
            ack = _message_types()[1]()
            ack.front = _U64.pack(n)
            conn.send_message(ack)


class _Source:
    """Client dispatcher: ack bookkeeping and the round-trip ping-pong."""

    def __init__(self) -> None:
        self.acked: dict[int, int] = {}
        self.progress = threading.Event()
        self.connected = threading.Event()
        self.rtt_samples: list[float] = []
        self.rtt_next = None            # callable sending the next request, or None to stop
        self.rtt_done = threading.Event()
        self.rtt_t0 = 0.0

    def dispatch(self, msg) -> None:
        if msg.header.type == ACK_TYPE:
            self.acked[id(msg.get_connection())] = _U64.unpack_from(msg.front)[0]
            self.progress.set()
            return
        now = time.perf_counter()
        self.rtt_samples.append(now - self.rtt_t0)
        nxt = self.rtt_next
        if nxt is None or not nxt(now):
            self.rtt_done.set()


def _dispatcher(handler, on_connect=None, on_accept=None, fast: bool = True):
    D = _api().Dispatcher

    class BenchDispatcher(D):
        def ms_can_fast_dispatch_any(self) -> bool:
            return fast

        def ms_can_fast_dispatch(self, msg) -> bool:
            return fast and msg.header.type in (BENCH_TYPE, ACK_TYPE)

        # the handler is the application's fast dispatch itself (no wrapper frame per message)
        ms_fast_dispatch = staticmethod(handler)

        def ms_dispatch(self, msg) -> bool:
            if msg.header.type in (BENCH_TYPE, ACK_TYPE):
                handler(msg)
                return True
            return False

    if not fast:
        class QueuedEvents(BenchDispatcher):
            def ms_handle_connect(self, conn) -> None:
                if on_connect:
                    on_connect(conn)

            def ms_handle_accept(self, conn) -> None:
                if on_accept:
                    on_accept(conn)

        return QueuedEvents()

    class FastEvents(BenchDispatcher):
        # what a performance-minded user writes: the events on the worker, no dispatch thread
        # (a callback it does not override is never queued, so that thread stays asleep)
        def ms_handle_fast_connect(self, conn) -> None:
            if on_connect:
                on_connect(conn)

        def ms_handle_fast_accept(self, conn) -> None:
            if on_accept:
                on_accept(conn)

    return FastEvents()


def _start_servers(p: Params, sink: _Sink, n: int, nonce0: int = 1000) -> tuple[list, list]:
    msgr = _api()
    servers, addrs = [], []
    _client_pol, server_pol = _policies(p)

    lock = threading.Lock()

    def accepted(_conn) -> None:
        with lock:   # on the workers with fast dispatch (several with --workers > 1)
            sink.accepted += 1
            if sink.accepted == sink.want_accepts:   # once, when a case waits for that many
                sink.accepted_evt.set()

    for i in range(n):
        ms = msgr.Messenger.create(msgr.EntityName.osd(i), nonce=nonce0 + i, config=_config(p))
        ms.set_default_policy(server_pol)
        ms.set_policy(msgr.EntityName.TYPE_CLIENT, server_pol)
        addrs.append(ms.bind(msgr.EntityAddr.parse("v1:127.0.0.1:0")))
        ms.add_dispatcher_head(_dispatcher(sink.dispatch, on_accept=accepted, fast=p.dispatch == "fast"))
        ms.start()
        servers.append(ms)
    return servers, addrs


def _stop(messengers: list) -> None:
    for ms in messengers:
        ms.shutdown()
    for ms in messengers:
        ms.wait()


class _Setup:
    """Servers (here or in a child process) plus one client messenger connected to each."""

    def __init__(self, p: Params) -> None:
        msgr = _api()
        self.p = p
        self.sink = _Sink(max(1, p.window // 4))
        self.source = _Source()
        self.child = self.pipe = None
        self.servers: list = []
        if p.processes == 2:
            import multiprocessing
            ctx = multiprocessing.get_context("spawn")   # never fork a process with threads
            self.pipe, child_end = ctx.Pipe()
            self.child = ctx.Process(target=_serve_child, args=(p, child_end), daemon=True)
            self.child.start()
            if not self.pipe.poll(30):
                raise TimeoutError("server process did not start")
            addrs = [msgr.EntityAddr.parse(a) for a in self.pipe.recv()]
        else:
            self.servers, addrs = _start_servers(p, self.sink, p.connections)
        client_pol, _ = _policies(p)
        self.client = msgr.Messenger.create(msgr.EntityName.client(4100), nonce=os.getpid(),
                                            config=_config(p))
        self.client.set_default_policy(client_pol)
        self.client.add_dispatcher_head(_dispatcher(self.source.dispatch, fast=p.dispatch == "fast"))
        self.client.start()
        self.conns = [self.client.connect_to(msgr.EntityName.TYPE_OSD, a) for a in addrs]

    def server_cpu(self) -> float:
        """CPU seconds of the server process so far (0 when the servers run here)."""
        if self.pipe is None:
            return 0.0
        self.pipe.send("cpu")
        return self.pipe.recv()

    def close(self) -> None:
        _stop([self.client] + self.servers)
        if self.child is not None:
            self.pipe.send("stop")
            self.child.join(10)
            if self.child.is_alive():
                self.child.kill()


def _serve_child(p: Params, pipe) -> None:
    """Body of the server process (--processes 2): serve until told to stop."""
    servers, addrs = _start_servers(p, _Sink(max(1, p.window // 4)), p.connections)
    pipe.send([str(a) for a in addrs])
    try:
        while True:
            cmd = pipe.recv()
            if cmd == "stop":
                break
            pipe.send(_cpu())
    finally:
        _stop(servers)


def _message(front: bytes, data: bytes, tid: int = 0):
    m = _message_types()[0]()
    m.front, m.data = front, data
    if tid:
        m.tid = tid
    return m


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pipelined(p: Params) -> dict:
    """One-way msgs/s and MB/s with ``window`` messages in flight per connection."""
    s = _Setup(p)
    try:
        front, data = bytes(p.front_size), bytes(p.data_size)
        MBench = _message_types()[0]
        conns, src = s.conns, s.source
        keys = [id(c) for c in conns]
        sent = [0] * len(conns)
        window, acked = p.window, src.acked
        # warm-up: the handshake and first message outside the timed window
        for i, c in enumerate(conns):
            c.send_message(_message(front, data, TID_FLUSH))
            sent[i] += 1
        _wait_acked(src, keys, sent, 10.0)
        base = list(sent)
        gc0 = gc_collections()
        cpu0, t0 = _cpu() + s.server_cpu(), time.perf_counter()
        deadline = t0 + p.duration
        total = 0
        while total < p.count and time.perf_counter() < deadline:
            progressed = False
            for i, c in enumerate(conns):
                room = window - (sent[i] - acked.get(keys[i], 0))
                if room <= 0:
                    continue
                progressed = True
                send = c.send_message
                for _ in range(min(room, p.count - total)):
                    m = MBench()        # what _message does, inline: the loop is the application's
                    m.front, m.data = front, data
                    send(m)
                sent[i] += min(room, p.count - total)
                total += min(room, p.count - total)
            if not progressed:
                src.progress.clear()
                if all(window - (sent[i] - acked.get(keys[i], 0)) <= 0 for i in range(len(conns))):
                    src.progress.wait(0.05)
        for i, c in enumerate(conns):
            c.send_message(_message(front, data, TID_FLUSH))
            sent[i] += 1
        if not _wait_acked(src, keys, sent, 30.0):
            raise TimeoutError(f"acked {[acked.get(k) for k in keys]} of {sent}")
        elapsed = time.perf_counter() - t0
        cpu = _cpu() + s.server_cpu() - cpu0
        gcs = gc_collections()
    finally:
        s.close()
    n = sum(sent) - sum(base)
    nbytes = n * p.size
    return {"case": "pymsgr.pipelined", "size": p.size, "messages": n, "elapsed_s": elapsed,
            "msgs_per_s": n / elapsed, "mb_per_s": nbytes / elapsed / 1e6,
            "cpu_s_per_gb": cpu / (nbytes / 1e9) if nbytes else None,
            **gc_per_10k(gc0, gcs, n), **_param_cols(p)}



def _wait_acked(src: _Source, keys: list[int], sent: list[int], timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        src.progress.clear()
        if all(src.acked.get(k, 0) >= n for k, n in zip(keys, sent, strict=True)):
            return True
        src.progress.wait(0.05)
    return False


def _param_cols(p: Params) -> dict:
    return {"connections": p.connections, "workers": p.workers, "window": p.window,
            "crc": p.crc, "policy": p.policy, "processes": p.processes, "dispatch": p.dispatch,
            "front_size": p.front_size, "data_size": p.data_size}


def rtt(p: Params) -> dict:
    """Round-trip latency with one message in flight, ping-pong driven by the dispatchers."""
    s = _Setup(p)
    try:
        front, data = bytes(p.front_size), bytes(p.data_size)
        conn, src = s.conns[0], s.source
        limit = [200, 0.0]                       # warm-up: 200 round trips

        def send(now: float) -> bool:
            if len(src.rtt_samples) >= limit[0] or now >= limit[1]:
                return False
            src.rtt_t0 = time.perf_counter()
            conn.send_message(_message(front, data, TID_ECHO))
            return True

        src.rtt_next = send
        for warm in (True, False):
            src.rtt_samples.clear()
            src.rtt_done.clear()
            limit[:] = [200, time.perf_counter() + 10] if warm else \
                [p.count, time.perf_counter() + p.duration]
            gc0 = gc_collections()
            send(0.0)
            if not src.rtt_done.wait(p.duration + 30):
                raise TimeoutError("round trips stalled")
        gcs = gc_collections()
        samples = list(src.rtt_samples)
    finally:
        s.close()
    row = {"case": "pymsgr.rtt", "size": p.size, "kind": "rtt", "messages": len(samples),
           "msgs_per_s": len(samples) / sum(samples) if samples else 0.0,
           "mb_per_s": None, **gc_per_10k(gc0, gcs, 2 * len(samples)), **_param_cols(p)}
    row.update(percentiles(samples))
    return row


def handshake_rate(p: Params) -> dict:
    """connect_to → ms_handle_connect → mark_down, sequentially, for ``p.duration``."""
    msgr = _api()
    sink = _Sink(1)
    p = Params(**{**p.__dict__, "policy": "lossy"})   # a fresh session per connect
    servers, addrs = _start_servers(p, sink, 1)
    connected = threading.Event()
    client_pol, _ = _policies(p)
    client = msgr.Messenger.create(msgr.EntityName.client(4101), nonce=os.getpid() + 1,
                                   config=_config(p))
    client.set_default_policy(client_pol)
    client.add_dispatcher_head(_dispatcher(lambda m: None, on_connect=lambda c: connected.set()))
    client.start()
    samples: list[float] = []
    try:
        end = time.perf_counter() + p.duration
        while time.perf_counter() < end and len(samples) < p.count:
            connected.clear()
            t0 = time.perf_counter()
            conn = client.connect_to(msgr.EntityName.TYPE_OSD, addrs[0])
            if not connected.wait(5.0):
                raise TimeoutError("handshake did not complete in 5 s")
            samples.append(time.perf_counter() - t0)
            conn.mark_down()
    finally:
        _stop([client] + servers)
    row = {"case": "pymsgr.handshake", "size": None, "kind": "connections",
           "handshakes": len(samples), "handshakes_per_s": len(samples) / sum(samples),
           "msgs_per_s": None, "mb_per_s": None}
    row.update({k.replace("_us", "_ms"): v / 1000 for k, v in percentiles(samples).items()})
    return row


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n), hard))


def _idle_server_child(p: Params, n: int, pipe) -> None:
    """Body of the idle-connections server process: one lossless server, answers rss/cpu/accepted."""
    _raise_nofile(n + 256)
    sink = _Sink(1)
    sink.want_accepts = n
    servers, addrs = _start_servers(p, sink, 1)
    pipe.send(str(addrs[0]))
    try:
        while True:
            cmd = pipe.recv()
            if cmd == "stop":
                break
            if cmd == "accepted":
                pipe.send(sink.accepted_evt.wait(30))
            elif cmd == "rss":
                pipe.send(_rss_kib())
            elif cmd == "cpu":
                pipe.send(_cpu())
    finally:
        _stop(servers)


def idle_connections(p: Params, n: int = 1000, idle_s: float = 2.0) -> dict:
    """RSS per idle lossless session on a pymsgr server (raw v1 clients) and its idle CPU.

    The server runs in a process of its own: measured in the process that also holds the raw clients,
    memory the clients freed was reused by the server and the figure came out near zero.
    """
    import multiprocessing
    msgr = _api()
    _raise_nofile(n + 256)
    lossless = Params(**{**p.__dict__, "policy": "lossless"})
    ctx = multiprocessing.get_context("spawn")   # never fork a process with threads
    pipe, child_end = ctx.Pipe()
    child = ctx.Process(target=_idle_server_child, args=(lossless, n, child_end), daemon=True)
    child.start()
    clients: list[RawV1Client] = []
    try:
        if not pipe.poll(30):
            raise TimeoutError("idle server process did not start")
        addr = msgr.EntityAddr.parse(pipe.recv())

        def ask(cmd: str):
            pipe.send(cmd)
            return pipe.recv()

        time.sleep(0.2)
        rss0 = ask("rss")
        t0 = time.perf_counter()
        for i in range(n):
            clients.append(RawV1Client(addr.ip, addr.port, host_type=8, peer_type=4, lossy=False,
                                       nonce=10_000 + i))
        if not ask("accepted"):
            raise TimeoutError(f"not all {n} sessions were accepted")
        setup_s = time.perf_counter() - t0
        time.sleep(0.5)
        cpu0 = ask("cpu")
        time.sleep(idle_s)
        idle_cpu = ask("cpu") - cpu0
        rss1 = ask("rss")
    finally:
        for c in clients:
            c.close()
        if child.is_alive():
            try:
                pipe.send("stop")
            except OSError:
                pass
            child.join(10)
            if child.is_alive():
                child.kill()
    return {"case": "pymsgr.idle_connections", "size": None, "kind": "connections",
            "connections": n, "rss_kib_per_conn": (rss1 - rss0) / n,
            "server_rss_kib": rss1, "idle_cpu_pct": 100 * idle_cpu / idle_s,
            "accepts_per_s": n / setup_s, "msgs_per_s": None, "mb_per_s": None}


def keepalive2(p: Params, duration: float) -> list[dict]:
    """KEEPALIVE2 round trips against a pymsgr server, by the clients used on the real mon."""
    from bench.baselines import keepalive2_row
    sink = _Sink(1)
    servers, addrs = _start_servers(Params(**{**p.__dict__, "policy": "lossy"}), sink, 1)
    try:
        rows = [keepalive2_row("pymsgr.keepalive2", addrs[0].ip, addrs[0].port, 4, duration)]
        rows[0]["server"] = "pymsgr"
        if client_keepalive_supported():
            rows.append(client_keepalive2("pymsgr.keepalive2.pymsgr_client", str(addrs[0]),
                                          _api().EntityName.TYPE_OSD, "pymsgr", duration))
        return rows
    finally:
        _stop(servers)


def raw_handshakes(p: Params, duration: float) -> dict:
    """Handshakes by the raw v1 client against a pymsgr server in a process of its own, as the
    real ceph-mon it is compared with runs in its own (a server sharing this process would share
    its GIL with the client)."""
    import multiprocessing

    from bench.baselines import handshake_row
    sp = Params(**{**p.__dict__, "policy": "lossy", "connections": 1})
    ctx = multiprocessing.get_context("spawn")   # never fork a process with threads
    pipe, child_end = ctx.Pipe()
    child = ctx.Process(target=_serve_child, args=(sp, child_end), daemon=True)
    child.start()
    try:
        if not pipe.poll(30):
            raise TimeoutError("server process did not start")
        addr = _api().EntityAddr.parse(pipe.recv()[0])
        row = handshake_row("pymsgr.handshake.rawv1", addr.ip, addr.port, _api().EntityName.TYPE_OSD,
                            duration)
        row["server"] = "pymsgr"
        return row
    finally:
        pipe.send("stop")
        child.join(10)
        if child.is_alive():
            child.kill()


def client_keepalive_supported() -> bool:
    """Whether a pymsgr Connection tells when the last KEEPALIVE2_ACK came (Ceph's name)."""
    try:
        from msgr.connection import Connection
    except ImportError:
        return False
    return hasattr(Connection, "get_last_keepalive_ack")


def client_keepalive2(case: str, addr: str, peer_type: int, server: str, duration: float,
                      windows: int = 3) -> dict:
    """Keepalive2 RTT measured by a pymsgr client messenger (``send_keepalive`` and
    ``get_last_keepalive_ack``); the waiting thread yields with sleep(0) so the worker runs."""
    msgr = _api()
    connected = threading.Event()
    client = msgr.Messenger.create(msgr.EntityName.client(4102), nonce=os.getpid() + 2,
                                   config=msgr.Config())
    client.set_default_policy(msgr.Policy.lossy_client())
    client.add_dispatcher_head(_dispatcher(lambda m: None, on_connect=lambda c: connected.set()))
    client.start()
    runs: list[list[float]] = []
    try:
        conn = client.connect_to(peer_type, msgr.EntityAddr.parse(addr))
        conn.send_keepalive()
        if not connected.wait(10):
            raise TimeoutError(f"no connection to {addr}")
        for w in range(windows + 1):          # window 0 is the warm-up
            samples: list[float] = []
            end = time.perf_counter() + (0.2 if w == 0 else duration / windows)
            while time.perf_counter() < end:
                prev = conn.get_last_keepalive_ack()
                t0 = time.perf_counter()
                conn.send_keepalive()
                limit = t0 + 5
                while conn.get_last_keepalive_ack() == prev:
                    time.sleep(0)
                    if time.perf_counter() > limit:
                        raise TimeoutError("no KEEPALIVE2_ACK within 5 s")
                samples.append(time.perf_counter() - t0)
            if w:
                runs.append(samples)
    finally:
        _stop([client])
    samples = min(runs, key=lambda r: percentiles(r)["p50_us"])
    row = {"case": case, "size": 9, "kind": "keepalive2", "client": "pymsgr", "server": server,
           "windows": windows, "messages": len(samples),
           "msgs_per_s": len(samples) / sum(samples), "mb_per_s": None}
    row.update(percentiles(samples))
    return row
