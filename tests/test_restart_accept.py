"""An accept racing the messenger's shutdown()/wait() (issue 11).

The listening socket's callback runs on a worker while the application thread shuts the messenger
down: it must neither trip over fields shutdown()/wait() clear (an AttributeError in the callback,
logged at ERROR) nor start a session that outlives the shutdown. A socket accepted once shutdown
began is closed at once.

The deterministic test holds the accept callback between two accepts (through the caller-owned
stack's ``get_worker``) until ``wait()`` has begun; the loop test races real connects against
shutdown + restart without any hook.
"""
from __future__ import annotations

import socket
import threading
import time

from lossless_util import wait_for

from eventcenter import NetworkStack
from msgr import Config, EntityAddr, EntityName, Messenger


def _raw_connect(addr: EntityAddr) -> socket.socket:
    s = socket.create_connection((addr.ip, addr.port), timeout=10)
    s.settimeout(10)
    return s


def _read_to_eof(s: socket.socket) -> bytes:
    """Everything the server sent until it closed the socket (a timeout fails the test)."""
    got = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def test_accept_held_across_shutdown_and_wait_closes_the_late_socket():
    stack = NetworkStack(num_workers=1)
    ms = Messenger.create(EntityName.osd(0), nonce=7100, config=Config(), stack=stack)
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    in_accept = threading.Event()
    real_get_worker = stack.get_worker
    calls: list[str] = []

    def held_get_worker():
        # the first accepted socket: stay inside the accept callback until wait() has begun, i.e.
        # has taken the stack (the window this test is about; wait() then blocks on this worker)
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            in_accept.set()
            wait_for(lambda: ms._stack is None, timeout=10, what="wait() to take the stack")
        return real_get_worker()

    stack.get_worker = held_get_worker  # type: ignore[method-assign]
    ms.start()
    try:
        first, second = _raw_connect(ms.get_myaddr()), _raw_connect(ms.get_myaddr())
        assert in_accept.wait(10), "the accept callback never ran"
        ms.shutdown()

        waiter = threading.Thread(target=ms.wait)
        waiter.start()
        waiter.join(20)
        assert not waiter.is_alive(), "wait() hung"
        # both raw peers are let go (closed by the accept that saw the shutdown, or with the listener)
        _read_to_eof(first)
        _read_to_eof(second)
        first.close()
        second.close()
        assert ms.connections() == []
    finally:
        ms.shutdown()
        ms.wait()
        stack.stop()


def test_connects_racing_shutdown_and_restart():
    """Raw connects keep arriving while the messenger is shut down and started again, many times."""
    ms = Messenger.create(EntityName.osd(0), nonce=7200, config=Config())
    addr = ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    stop = threading.Event()
    refused = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                s = socket.create_connection((addr.ip, addr.port), timeout=2)
            except OSError:
                refused[0] += 1
                time.sleep(0.001)
                continue
            s.close()

    hammers = [threading.Thread(target=hammer) for _ in range(3)]
    for t in hammers:
        t.start()
    try:
        for _ in range(30):
            ms.shutdown()
            ms.wait()
            assert ms.connections() == []
            ms.start()
    finally:
        stop.set()
        for t in hammers:
            t.join()
        ms.shutdown()
        ms.wait()
