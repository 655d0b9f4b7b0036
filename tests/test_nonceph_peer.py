"""A peer that is not speaking msgr v1 is dropped as soon as its bytes show it (issue 11, defect 4).

Before, an HTTP client or an SSH banner was held until ms_connection_ready_timeout, because the
banner was only checked once all 145 (accepting) or 281 (connecting) bytes had arrived. Now each
byte of the banner is checked as it arrives, the address families as soon as they are in, and a
connect reply's tag with its first byte; the fault names what arrived.
"""
from __future__ import annotations

import logging
import socket
import threading

import pytest
from rawv1 import recv_exact, recv_until_closed
from test_messenger_loopback import wait_for

from msgr import Config, EntityAddr, EntityName, Messenger, Policy
from msgr.errors import BadAddressError, BadBannerError, BadTagError
from msgr.protocol.actions import CloseSocket, Fault
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.wire import BANNER, pack_server_identify

SERVER_ADDR = EntityAddr.parse("v1:127.0.0.1:6800/77")
CLIENT_ADDR = EntityAddr.parse("v1:127.0.0.1:0/4242")
SOCK_PEER = EntityAddr.parse("v1:127.0.0.1:45000/0")
SSH = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n"
HTTP_GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
# ms_connection_ready_timeout far beyond any wait of these tests: a drop must come from the bytes
NO_TIMEOUT = Config(ms_connection_ready_timeout=600)


def _server() -> ProtocolV1:
    host = FakeHost(EntityName.osd(1), SERVER_ADDR, config=NO_TIMEOUT.copy(),
                    default_policy=Policy.stateless_server())
    p = ProtocolV1(host)
    p.start_accept(SOCK_PEER, SERVER_ADDR, 0)
    p.take_output()
    return p


def _client(policy: Policy) -> ProtocolV1:
    host = FakeHost(EntityName.client(), CLIENT_ADDR, config=NO_TIMEOUT.copy(), default_policy=policy)
    p = ProtocolV1(host)
    p.start_connect(SERVER_ADDR, EntityName.TYPE_OSD, 0)
    p.on_connected(EntityAddr.parse("v1:127.0.0.1:45000/0"), 0)
    p.take_output()
    return p


def _faults(acts: list) -> list[Fault]:
    return [a for a in acts if isinstance(a, Fault)]


# --- accepting side -------------------------------------------------------------------------------------
@pytest.mark.parametrize("junk", [SSH, HTTP_GET, b"\x16\x03\x01\x02\x00", b"ceph v1\n", b"ceph v028"],
                         ids=["ssh", "http", "tls", "ceph_v1_prefix", "ceph_v028"])
def test_server_drops_a_wrong_banner_at_the_first_wrong_byte(junk):
    p = _server()
    first_bad = next(i for i, b in enumerate(junk) if i >= len(BANNER) or b != BANNER[i])
    for i in range(len(junk)):
        acts = p.receive_data(junk[i:i + 1], 0)
        if i < first_bad:
            assert not _faults(acts), (i, acts)
            continue
        (fault,) = _faults(acts)
        assert isinstance(fault.error, BadBannerError)
        assert fault.error.got == junk[:i + 1]
        assert "not a Ceph v1 peer" in fault.reason and repr(junk[:i + 1]) in fault.reason
        assert any(isinstance(a, CloseSocket) for a in acts) and p.state is State.CLOSED
        return
    raise AssertionError("never faulted")


def test_server_names_what_arrived_in_one_piece():
    p = _server()
    (fault,) = _faults(p.receive_data(SSH, 0))
    assert fault.error.got == SSH[:16] and "got b'SSH-2.0-OpenSSH_'" in fault.reason
    assert p.state is State.CLOSED


def test_server_drops_an_impossible_address_family_before_the_address_is_complete():
    p = _server()
    addr = bytearray(CLIENT_ADDR.encode_legacy())
    addr[8:10] = b"\x12\x34"
    (fault,) = _faults(p.receive_data(BANNER + bytes(addr[:12]), 0))
    assert isinstance(fault.error, BadAddressError) and p.state is State.CLOSED


def test_server_takes_a_valid_banner_one_byte_at_a_time():
    p = _server()
    data = BANNER + CLIENT_ADDR.encode_legacy()
    for i in range(len(data)):
        assert not _faults(p.receive_data(data[i:i + 1], 0)), i
    assert p.state is State.ACCEPTING_WAIT_CONNECT_MSG


# --- connecting side ------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [Policy.lossy_client(), Policy.lossless_peer()], ids=["lossy", "lossless"])
@pytest.mark.parametrize("junk", [SSH, HTTP_400, b"ceph v2\n"], ids=["ssh", "http", "ceph_v2"])
def test_client_drops_a_server_that_is_not_ceph(policy, junk):
    p = _client(policy)
    (fault,) = _faults(p.receive_data(junk, 0))
    assert isinstance(fault.error, BadBannerError) and "not a Ceph v1 peer" in fault.reason
    assert fault.error.got == junk[:16]
    assert p.state is not State.CONNECTING_WAIT_BANNER_AND_IDENTIFY


def test_client_takes_a_valid_identify_one_byte_at_a_time():
    p = _client(Policy.lossy_client())
    data = pack_server_identify(SERVER_ADDR, SOCK_PEER)
    for i in range(len(data)):
        assert not _faults(p.receive_data(data[i:i + 1], 0)), i
    assert p.state is State.CONNECTING_WAIT_CONNECT_REPLY


def test_client_drops_an_impossible_connect_reply_tag_at_its_first_byte():
    p = _client(Policy.lossless_peer())
    p.receive_data(pack_server_identify(SERVER_ADDR, SOCK_PEER), 0)
    p.take_output()
    assert p.state is State.CONNECTING_WAIT_CONNECT_REPLY
    (fault,) = _faults(p.receive_data(b"H", 0))      # "HTTP/1.1 ..." after our banner
    assert isinstance(fault.error, BadTagError) and "b'H'" in fault.reason


def test_client_waits_for_the_rest_of_a_valid_reply_tag():
    p = _client(Policy.lossless_peer())
    p.receive_data(pack_server_identify(SERVER_ADDR, SOCK_PEER), 0)
    assert not _faults(p.receive_data(b"\x01", 0))     # READY: the rest may follow
    assert p.state is State.CONNECTING_WAIT_CONNECT_REPLY


# --- real sockets: both roles -----------------------------------------------------------------------------
@pytest.fixture
def server_ms():
    ms = Messenger.create(EntityName.osd(21), nonce=2121, config=NO_TIMEOUT.copy())
    ms.set_default_policy(Policy.stateless_server())
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    yield ms
    ms.shutdown()
    ms.wait()


@pytest.mark.parametrize("junk", [SSH, HTTP_GET], ids=["ssh", "http"])
def test_messenger_closes_a_non_ceph_client_at_once(server_ms, caplog, junk):
    caplog.set_level(logging.INFO, logger="msgr")
    s = socket.create_connection(server_ms.get_myaddr().sockaddr(), timeout=10)
    try:
        recv_exact(s, len(BANNER))
        s.sendall(junk)
        try:
            recv_until_closed(s)
        except TimeoutError:
            pytest.fail("the messenger held a non-Ceph peer (ms_connection_ready_timeout is 600 s)")
    finally:
        s.close()
    want = f"not a Ceph v1 peer: got {junk[:16]!r}"
    wait_for(lambda: any(want in r.getMessage() for r in caplog.records), what=f"a log line {want!r}")


class _FakeServer:
    """A listening socket that answers every connection with ``reply`` and then reads until EOF."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.closed_by_peer = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            conn.sendall(self.reply)
            try:
                while conn.recv(4096):
                    pass
                self.closed_by_peer.set()
            except OSError:
                self.closed_by_peer.set()

    def close(self) -> None:
        self.lsock.close()
        self.thread.join(timeout=30)


@pytest.mark.parametrize("reply", [SSH, HTTP_400], ids=["ssh", "http"])
def test_messenger_drops_a_non_ceph_server_at_once(caplog, reply):
    caplog.set_level(logging.INFO, logger="msgr")
    fake = _FakeServer(reply)
    ms = Messenger.create(EntityName.client(22), nonce=2222, config=NO_TIMEOUT.copy())
    ms.set_default_policy(Policy.lossy_client())
    ms.start()
    try:
        conn = ms.connect_to(EntityName.TYPE_OSD, EntityAddr.parse(f"v1:127.0.0.1:{fake.port}/0"))
        assert fake.closed_by_peer.wait(15), "the client held a non-Ceph server"
        want = f"not a Ceph v1 peer: got {reply[:16]!r}"
        wait_for(lambda: any(want in r.getMessage() for r in caplog.records), what=f"a log line {want!r}")
        assert "BadBannerError" in (conn.last_fault or "")
        assert isinstance(conn.last_fault_error, BadBannerError) and conn.last_fault_error.got == reply[:16]
    finally:
        ms.shutdown()
        ms.wait()
        fake.close()
