"""FaultProxy: each fault mode does what it says to real sockets on loopback."""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from msgr.testing import Direction, FaultProxy


class Server:
    """A threaded TCP server; ``handler(sock)`` runs per connection, its result lands in ``results``."""

    def __init__(self, handler: Callable[[socket.socket], object]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()[:2]
        self.results: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, s: socket.socket) -> None:
        with s:
            try:
                self.results.put(self.handler(s))
            except Exception as exc:   # the test inspects what the server hit
                self.results.put(exc)

    def close(self) -> None:
        self.sock.close()


def echo(s: socket.socket) -> str:
    while True:
        data = s.recv(65536)
        if not data:
            return "eof"
        s.sendall(data)


def sink(s: socket.socket) -> tuple[bytes, str]:
    """Read until EOF or error; return (bytes, how it ended)."""
    got = bytearray()
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return bytes(got), "reset"
        if not data:
            return bytes(got), "eof"
        got += data


def recv_exact(s: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        data = s.recv(n - len(buf))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def recv_end(s: socket.socket, timeout: float = 10.0) -> str:
    """Read until the connection ends; 'reset' or 'eof' (discarding data)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


def wait_stat(proxy: FaultProxy, key: str, value: int, timeout: float = 5.0) -> None:
    """Wait until a counter reaches ``value`` (the proxy counts just after its syscall)."""
    deadline = time.monotonic() + timeout
    while proxy.stats()[key] < value and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(handler: Callable[[socket.socket], object] = echo) -> Server:
        srv = Server(handler)
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(target: tuple[str, int], seed: int = 1) -> FaultProxy:
        p = FaultProxy(target, seed=seed).start()
        proxies.append(p)
        return p
    yield make
    for p in proxies:
        p.stop()


def connect(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(proxy.addr, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_passes_bytes_through_unchanged(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    data = os.urandom(1 << 20)
    with connect(proxy) as c:
        threading.Thread(target=c.sendall, args=(data,), daemon=True).start()
        assert recv_exact(c, len(data)) == data
    wait_stat(proxy, "bytes_to_client", len(data))
    st = proxy.stats()
    assert st["bytes_to_target"] == len(data) == st["bytes_to_client"]
    assert st["connections"] == 1 and st["resets"] == 0


def test_random_delays_keep_byte_order(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    proxy.set_delay(0, 5)
    pieces = [bytes([i % 256]) * (1 + (i * 37) % 300) for i in range(400)]
    data = b"".join(pieces)
    with connect(proxy) as c:
        def writer() -> None:
            for piece in pieces:
                c.sendall(piece)
        threading.Thread(target=writer, daemon=True).start()
        assert recv_exact(c, len(data)) == data
    assert proxy.stats()["delayed_chunks"] > 0


def test_concurrent_connections_each_keep_order(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    proxy.set_delay(0, 3)
    proxy.set_random_stalls(0.05, 1, 20)
    errors: list[BaseException] = []

    def client(n: int) -> None:
        data = bytes((n * 7 + i) % 251 for i in range(50_000))
        try:
            with connect(proxy) as c:
                for off in range(0, len(data), 997):
                    c.sendall(data[off:off + 997])
                assert recv_exact(c, len(data)) == data
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    st = proxy.stats()
    assert st["connections"] == 6 and st["stalls"] > 0


def test_ipv6_listener_beside_an_ipv4_wildcard_port(server_factory) -> None:
    # how the lossless tests sit in front of a messenger bound to 0.0.0.0:P: [::1]:P is free
    wild = socket.create_server(("0.0.0.0", 0))
    port = wild.getsockname()[1]
    try:
        with FaultProxy(server_factory().addr, listen=("::1", port)) as proxy:
            assert proxy.addr == ("::1", port)
            with socket.create_connection(proxy.addr, timeout=10) as c:
                c.sendall(b"six")
                assert recv_exact(c, 3) == b"six"
    finally:
        wild.close()


def test_split_forwards_one_byte_per_send(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    proxy.set_split(True)
    data = os.urandom(3000)
    with connect(proxy) as c:
        c.sendall(data)
        assert recv_exact(c, len(data)) == data
    # both directions went one byte per send
    wait_stat(proxy, "split_sends", 2 * len(data))
    assert proxy.stats()["split_sends"] == 2 * len(data)


def test_stall_pauses_then_resumes(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    with connect(proxy) as c:
        c.sendall(b"warm")
        assert recv_exact(c, 4) == b"warm"
        proxy.stall(400)
        c.sendall(b"held")
        c.settimeout(0.15)
        with pytest.raises(socket.timeout):
            c.recv(4)
        assert recv_exact(c, 4) == b"held"
    assert proxy.stats()["stalls"] == 1


def test_reset_after_k_bytes_cuts_exactly_there(server_factory, proxy_factory) -> None:
    srv = server_factory(sink)
    proxy = proxy_factory(srv.addr)
    proxy.set_reset_after(1000)
    data = os.urandom(5000)
    with connect(proxy) as c:
        try:
            c.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass   # the RST may arrive while we are still writing
        got, how = srv.results.get(timeout=10)
        assert (got, how) == (data[:1000], "reset")
        assert recv_end(c) == "reset"
    assert proxy.stats()["resets"] == 1


def _random_reset_prefix(server_factory, proxy_factory, seed: int) -> int:
    srv = server_factory(sink)
    proxy = proxy_factory(srv.addr, seed=seed)
    proxy.set_reset_probability(1.0)
    data = os.urandom(200)
    with connect(proxy) as c:
        c.sendall(data)
        got, how = srv.results.get(timeout=10)
        assert how == "reset"
        assert len(got) < len(data) and got == data[:len(got)]
        assert recv_end(c) == "reset"
    assert proxy.stats()["resets"] == 1
    return len(got)


def test_random_reset_is_mid_chunk_and_seeded(server_factory, proxy_factory) -> None:
    a = _random_reset_prefix(server_factory, proxy_factory, seed=42)
    b = _random_reset_prefix(server_factory, proxy_factory, seed=42)
    assert a == b


def test_reset_all_gives_both_sides_an_rst(server_factory, proxy_factory) -> None:
    srv = server_factory(sink)
    proxy = proxy_factory(srv.addr)
    with connect(proxy) as c:
        c.sendall(b"abc")
        deadline = time.monotonic() + 5
        while proxy.stats()["bytes_to_target"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.reset_all()
        assert srv.results.get(timeout=10) == (b"abc", "reset")
        assert recv_end(c) == "reset"
    assert proxy.connection_count() == 0 and proxy.stats()["resets"] == 1


def test_half_close_to_target_leaves_other_direction_open(server_factory, proxy_factory) -> None:
    def talk_after_eof(s: socket.socket) -> str:
        got = sink(s)
        s.sendall(b"after-eof")
        return got[1]
    srv = server_factory(talk_after_eof)
    proxy = proxy_factory(srv.addr)
    with connect(proxy) as c:
        c.sendall(b"x")
        deadline = time.monotonic() + 5
        while proxy.stats()["bytes_to_target"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.half_close(Direction.TO_TARGET)
        assert srv.results.get(timeout=10) == "eof"
        assert recv_exact(c, 9) == b"after-eof"
        c.sendall(b"dropped")   # swallowed, the target already saw FIN
    st = proxy.stats()
    assert st["half_closes"] == 1 and st["resets"] == 0


def test_half_close_to_client_leaves_other_direction_open(server_factory, proxy_factory) -> None:
    srv = server_factory(sink)
    proxy = proxy_factory(srv.addr)
    with connect(proxy) as c:
        c.sendall(b"one")
        deadline = time.monotonic() + 5
        while proxy.stats()["bytes_to_target"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.half_close(Direction.TO_CLIENT)
        c.settimeout(5)
        assert c.recv(10) == b""          # EOF towards the client
        c.sendall(b"two")                 # ...while client -> target still flows
        c.shutdown(socket.SHUT_WR)
        assert srv.results.get(timeout=10) == (b"onetwo", "eof")


def test_black_hole_swallows_and_keeps_sockets_open(server_factory, proxy_factory) -> None:
    srv = server_factory()
    proxy = proxy_factory(srv.addr)
    with connect(proxy) as c:
        c.sendall(b"ping")
        assert recv_exact(c, 4) == b"ping"
        proxy.black_hole(True)
        c.sendall(b"lost" * 100)
        c.settimeout(0.3)
        with pytest.raises(socket.timeout):   # no data, and no EOF or RST either
            c.recv(10)
        c.sendall(b"still open")
        deadline = time.monotonic() + 5
        while proxy.stats()["bytes_swallowed"] < 410 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats()["bytes_swallowed"] == 410
        assert proxy.connection_count() == 1
    proxy.black_hole(False)
    with connect(proxy) as c2:   # new connections after the black hole work again
        c2.sendall(b"back")
        assert recv_exact(c2, 4) == b"back"
    assert proxy.stats()["black_holes"] == 1


def test_unreachable_target_resets_the_client(proxy_factory) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()   # nothing listens there now
    proxy = proxy_factory(("127.0.0.1", port))
    try:
        with connect(proxy) as c:
            assert recv_end(c) == "reset"
    except ConnectionResetError:
        pass   # the RST can beat connect() returning: still a reset
    wait_stat(proxy, "connect_failures", 1)
    assert proxy.stats()["connect_failures"] == 1


def test_stop_resets_open_connections(server_factory) -> None:
    srv = server_factory()
    proxy = FaultProxy(srv.addr).start()
    with connect(proxy) as c:
        c.sendall(b"hi")
        assert recv_exact(c, 2) == b"hi"
        proxy.stop()
        assert recv_end(c) == "reset"
    with pytest.raises(OSError):
        socket.create_connection(proxy.addr, timeout=2).close()
