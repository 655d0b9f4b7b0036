"""The listener's accept path (messenger.py). ACCEPT_BURST_NS: a lone connection is accepted
with one accept() per event, a burst with up to ACCEPT_BATCH. Either way every queued connection
is accepted: the listening fd is level-triggered, so what one event leaves in the queue fires the
next. Both shapes are driven here (lone connections spaced out, then a burst connected at once)."""
from __future__ import annotations

import socket
import time

from rawv1 import connect_msg, my_addr, open_session, recv_exact
from test_messenger_loopback import wait_for

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy
from msgr.wire import BANNER, SERVER_IDENTIFY_SIZE, ConnectReply, Tag


class Quiet(Dispatcher):
    def ms_dispatch(self, msg) -> bool:
        return True


def test_lone_and_burst_connections_are_all_accepted() -> None:
    ms = Messenger.create(EntityName.osd(1), nonce=4100, config=Config())
    ms.set_default_policy(Policy.stateless_server())
    ms.add_dispatcher_tail(Quiet())
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    socks: list[socket.socket] = []
    try:
        addr = ms.get_myaddr()
        for i in range(5):               # lone: further apart than a burst
            time.sleep(0.002)
            socks.append(open_session(addr, nonce=600 + i))
        burst = [socket.create_connection(addr.sockaddr(), timeout=10) for _ in range(40)]
        socks += burst
        for i, s in enumerate(burst):    # all queued before any handshake completes
            recv_exact(s, SERVER_IDENTIFY_SIZE)
            s.sendall(BANNER + my_addr(700 + i) + connect_msg())
        for s in burst:
            assert ConnectReply.unpack(recv_exact(s, ConnectReply.SIZE)).tag == Tag.READY
        wait_for(lambda: ms.perf_dump()["connections"]["live"] == 45, what="45 live sessions")
    finally:
        for s in socks:
            s.close()
        ms.shutdown()
        ms.wait()


def test_accepted_session_knows_its_local_address_bound_or_wildcard() -> None:
    """Bound to one IP the listener hands each accepted session its own address (no getsockname per
    accept); bound to the wildcard the session asks its socket. Either way the session's local
    address is the one the client dialled (IPv4 and IPv6 listeners: the accepted socket is made
    with the listener's family)."""
    for bind_ip, dial_ip in (("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("[::1]", "[::1]")):
        ms = Messenger.create(EntityName.osd(1), nonce=4200, config=Config())
        ms.set_default_policy(Policy.stateless_server())
        ms.add_dispatcher_tail(Quiet())
        ms.bind(EntityAddr.parse(f"v1:{bind_ip}:0"))
        ms.start()
        try:
            port = ms.get_myaddr().port
            s = open_session(EntityAddr.parse(f"v1:{dial_ip}:{port}"))
            try:
                wait_for(lambda m=ms: len(m._all) == 1, what="accepted session")
                proto = next(iter(ms._all))._proto
                assert (proto._sock_local.ip, proto._sock_local.port) == s.getpeername()[:2]
                assert (ms._accept_local is None) == (bind_ip == "0.0.0.0")
            finally:
                s.close()
        finally:
            ms.shutdown()
            ms.wait()


def test_accepted_socket_has_the_configured_tcp_options() -> None:
    """ms_tcp_nodelay and ms_tcp_rcvbuf hold for an accepted socket: set on the listener, which each
    accepted socket inherits (no setsockopt per accept), or on the socket itself."""
    for nodelay in (True, False):
        ms = Messenger.create(EntityName.osd(1), nonce=4300,
                              config=Config(ms_tcp_nodelay=nodelay, ms_tcp_rcvbuf=256 * 1024))
        ms.set_default_policy(Policy.stateless_server())
        ms.add_dispatcher_tail(Quiet())
        ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
        ms.start()
        try:
            s = open_session(ms.get_myaddr())
            try:
                wait_for(lambda m=ms: len(m._all) == 1, what="accepted session")
                conn = next(iter(ms._all))
                wait_for(lambda c=conn: c._sock is not None, what="its socket")
                sock = conn._sock
                assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is nodelay
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 256 * 1024
            finally:
                s.close()
        finally:
            ms.shutdown()
            ms.wait()
