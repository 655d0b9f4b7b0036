"""A pymsgr service verifying cephx authorizers with rotating secrets from a real ceph-mon 16.

The service is a pymsgr messenger named ``osd.5``: it logs in to the real monitor with its own
key (``ceph auth get-or-create``), fetches the OSD rotating secrets (CEPHX_GET_ROTATING_KEY)
and verifies the authorizers of incoming connects with them (``MonAuth.serve``). Its clients
present OSD tickets the real monitor issued. Accepted: a pymsgr client logged in as
client.admin (challenge, reply, signed messages both ways). Refused with BADAUTHORIZER:
garbage, a forged ticket, a ticket presented under another global_id, auth none, and a
replayed authorizer (it meets a new challenge; the old answer does not answer it).
"""
from __future__ import annotations

import queue
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_cephx_osd import _recv_exact

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.auth.cephx_wire import AuthTicket, ServiceTicketInfo, TicketBlob
from msgr.auth.crypto import KeyCipher, seal
from msgr.auth.keyring import CryptoKey
from msgr.auth.tickets import Authorizer
from msgr.encoding import AuthEntityName, Encoder, Utime
from msgr.features import CEPH_FEATURES_ALL_PACIFIC
from msgr.messages.ping import MPing
from msgr.monc import MonAuth
from msgr.wire import BANNER, ConnectMsg, ConnectReply, Tag

pytestmark = pytest.mark.ceph
OSD, MON, CLIENT = EntityName.TYPE_OSD, EntityName.TYPE_MON, EntityName.TYPE_CLIENT
OSDC_PROTOCOL = 24


class Echo(Dispatcher):
    """Answers every MPing with an MPing; keeps what arrived."""

    def __init__(self) -> None:
        self.got: queue.Queue[Message] = queue.Queue()

    def ms_dispatch(self, msg: Message) -> bool:
        if not isinstance(msg, MPing):
            return False
        self.got.put(msg)
        conn = msg.get_connection()
        if conn is not None and conn.get_peer_type() != OSD:
            conn.send_message(MPing())
        return True


def _messenger(name: EntityName, cfg: Config, *disp: Dispatcher, bind: bool = False) -> Any:
    ms = Messenger.create(name, config=cfg)
    ms.set_policy(MON, Policy.lossy_client())
    ms.set_policy(OSD, Policy.lossy_client())
    ms.set_policy(CLIENT, Policy.stateless_server())
    for d in disp:
        ms.add_dispatcher_tail(d)
    if bind:
        ms.bind(EntityAddr.parse("v1:127.0.0.1:0/0"))
    ms.start()
    return ms


@pytest.fixture(scope="module")
def service(cephx_mon, tmp_path_factory) -> Iterator[tuple]:
    mon = cephx_mon
    keyring = tmp_path_factory.mktemp("osd5") / "keyring"
    r = mon.ceph_cli("auth", "get-or-create", "osd.5", "mon", "allow profile osd", "-o", str(keyring))
    assert r.returncode == 0, r.stderr
    echo = Echo()
    ms = _messenger(EntityName(OSD, 5), Config(name="osd.5", keyring=str(keyring),
                                               auth_client_required="cephx"), echo, bind=True)
    try:
        login = MonAuth(ms, EntityAddr.parse(mon.addr))
        login.login()
        server = login.serve()
        yield mon, ms, server, echo, login
    finally:
        ms.shutdown()
        ms.wait()


@pytest.fixture
def admin(service) -> Iterator[tuple]:
    mon = service[0]
    echo = Echo()
    ms = _messenger(EntityName.client(), Config(name="client.admin", keyring=str(mon.keyring_path),
                                                auth_client_required="cephx"), echo)
    try:
        login = MonAuth(ms, EntityAddr.parse(mon.addr))
        login.login()
        yield ms, echo, login
    finally:
        ms.shutdown()
        ms.wait()


def test_service_fetches_rotating_secrets_from_the_monitor(service):
    mon, ms, server, echo, login = service
    rot = login.cephx.rotating
    assert rot is not None and rot.secrets and all(len(k.key.secret) == 16 for k in rot.secrets.values())
    assert server.secrets.secret_ids(OSD) == sorted(rot.secrets)


def test_pymsgr_client_is_accepted_and_the_session_is_signed(service, admin):
    mon, sms, server, secho, _ = service
    cms, cecho, clogin = admin
    accepted = server.accepted
    conn = cms.connect_to(OSD, sms.get_myaddr())
    conn.send_message(MPing())
    assert isinstance(secho.got.get(timeout=10), MPing)   # the service got it (signature checked)
    assert isinstance(cecho.got.get(timeout=10), MPing)   # and we got its signed answer
    assert server.accepted == accepted + 1 and server.challenged >= 1
    signer = conn._proto._signer
    assert signer is not None and signer.signed == 1 and signer.checked == 1
    peer = [c for c in sms.connections() if c.get_peer_type() == CLIENT and c.is_connected()]
    assert peer and any(c._proto._signer is not None and c._proto._signer.checked >= 1 for c in peer)


class RawClient:
    """One raw v1 socket to the service: connects with authorizer bytes we choose."""

    def __init__(self, addr: EntityAddr) -> None:
        self.sock = socket.create_connection((addr.ip, addr.port), timeout=10)
        self.sock.sendall(BANNER)
        _recv_exact(self.sock, 9 + 136 + 136)
        self.sock.sendall(EntityAddr.parse("v1:127.0.0.1:0/9999").encode_legacy())

    def connect(self, proto: int, auth: bytes) -> tuple[ConnectReply, bytes]:
        self.sock.sendall(ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, CLIENT, 1, 0, OSDC_PROTOCOL, proto,
                                     len(auth), 0).pack() + auth)
        reply = ConnectReply.unpack(_recv_exact(self.sock, ConnectReply.SIZE))
        return reply, _recv_exact(self.sock, reply.authorizer_len)

    def close(self) -> None:
        self.sock.close()


def _osd_authorizer(clogin: MonAuth) -> Authorizer:
    return clogin.cephx.build_authorizer(OSD, time.time())


def test_the_real_flow_by_hand_then_replay_is_refused(service, admin):
    mon, sms, server, _, _ = service
    _, _, clogin = admin
    a = _osd_authorizer(clogin)
    raw = RawClient(sms.get_myaddr())
    try:
        r, chal = raw.connect(2, a.payload)
        assert r.tag == Tag.CHALLENGE_AUTHORIZER and len(chal) == 32   # as the real OSD
        a.add_challenge(chal)
        answered = a.payload
        r, proof = raw.connect(2, answered)
        assert r.tag in (Tag.READY, Tag.SEQ)
        a.verify_reply(proof)
    finally:
        raw.close()
    # the same bytes on a new socket: a new challenge, and the old answer does not answer it
    refused = server.refused
    raw = RawClient(sms.get_myaddr())
    try:
        r, chal2 = raw.connect(2, answered)
        assert r.tag == Tag.CHALLENGE_AUTHORIZER and chal2 != chal
        r, _ = raw.connect(2, answered)
        assert r.tag == Tag.BADAUTHORIZER
        assert server.refused == refused + 1 and "answers challenge" in server.last_refusal
    finally:
        raw.close()


def _forged(clogin: MonAuth, case: str) -> tuple[int, bytes]:
    a = _osd_authorizer(clogin)
    gid = clogin.global_id
    blob = clogin.cephx.tickets.handlers[OSD].ticket
    if case == "garbage":
        return 2, b"\x01" + bytes(40)
    if case == "auth none":
        return 1, struct.pack("<BII", 1, CLIENT, 5) + b"admin" + struct.pack("<Q", 0)
    if case == "other global_id":
        return 2, Encoder().u8(1).u64(gid + 1).u32(OSD).getvalue() + a.payload[13:]
    if case == "truncated":
        return 2, a.payload[:-7]
    # a ticket we minted ourselves: right secret_id, but sealed with a key that is not the service's
    key = CryptoKey.generate()
    info = ServiceTicketInfo(AuthTicket(AuthEntityName(CLIENT, "admin"), gid, Utime(int(time.time()), 0),
                                        Utime(int(time.time()) + 3600, 0)), key)
    forged = TicketBlob(blob.secret_id, seal(CryptoKey.generate().secret, info.encode()))
    e = Encoder().u8(1).u64(gid).u32(OSD)
    forged.encode_into(e)
    base = e.getvalue()
    return 2, Authorizer(OSD, key, 1, base, base + a.payload[len(a.base):]).payload


@pytest.mark.parametrize("case", ["garbage", "auth none", "other global_id", "truncated", "forged ticket"])
def test_forged_authorizers_get_badauthorizer(service, admin, case):
    mon, sms, server, _, _ = service
    _, _, clogin = admin
    proto, auth = _forged(clogin, case)
    refused = server.refused
    raw = RawClient(sms.get_myaddr())
    try:
        r, _ = raw.connect(proto, auth)
        assert r.tag == Tag.BADAUTHORIZER, (case, Tag(r.tag))
        # the socket stays usable for another connect (as Ceph), and a good one now is challenged
        good = _osd_authorizer(clogin)
        r, chal = raw.connect(2, good.payload)
        assert r.tag == Tag.CHALLENGE_AUTHORIZER
    finally:
        raw.close()
    assert server.refused == refused + 1


def test_pymsgr_client_without_login_is_refused_and_faults(service):
    mon, sms, server, _, _ = service
    echo = Echo()
    ms = _messenger(EntityName.client(), Config(), echo)
    try:
        conn = ms.connect_to(OSD, sms.get_myaddr())
        conn.send_message(MPing())
        deadline = time.monotonic() + 10
        while "BADAUTHORIZER" not in (conn.last_fault or "") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "BADAUTHORIZER" in (conn.last_fault or "") and echo.got.empty()
    finally:
        ms.shutdown()
        ms.wait()


def test_a_badly_signed_message_faults_the_session_with_one_warning(service, admin, caplog):
    """The client signs with a key that is not the session's (a peer that does): the service
    faults that connection with one WARNING and delivers nothing; other sessions are untouched."""
    import logging
    mon, sms, server, secho, _ = service
    cms, cecho, _ = admin
    conn = cms.connect_to(OSD, sms.get_myaddr())
    conn.send_message(MPing())
    assert isinstance(secho.got.get(timeout=10), MPing) and isinstance(cecho.got.get(timeout=10), MPing)
    signer = conn._proto._signer
    assert signer is not None
    signer._cipher = KeyCipher(bytes(16))   # from now on our signatures are wrong (another key)
    with caplog.at_level(logging.INFO, logger="msgr"):
        conn.send_message(MPing())
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "BadSignatureError" in r.getMessage()] \
                and time.monotonic() < deadline:
            time.sleep(0.02)
    warned = [r for r in caplog.records if "BadSignatureError" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert secho.got.empty()
    # a new session (new authorizer, new key) works again
    conn2 = cms.connect_to(OSD, sms.get_myaddr())
    deadline = time.monotonic() + 10
    while conn2 is conn and time.monotonic() < deadline:   # the faulted lossy session is replaced
        time.sleep(0.02)
        conn2 = cms.connect_to(OSD, sms.get_myaddr())
    conn2.send_message(MPing())
    assert isinstance(secho.got.get(timeout=10), MPing)


def test_keep_fresh_renews_tickets_and_rotating_secrets(service):
    """keep_fresh against the real monitor, with our clock moved ahead: the service re-fetches its
    rotating secrets once the oldest has expired, and renews its tickets when three quarters through."""
    mon, _, _, _, login = service
    ahead = [0.0]
    ms = _messenger(EntityName(OSD, 5), Config(name="osd.5", keyring=str(login.auth.keyring_path),
                                               auth_client_required="cephx"))
    fresh = MonAuth(ms, EntityAddr.parse(mon.addr), clock=lambda: time.time() + ahead[0])
    try:
        fresh.login()
        fresh.serve()
        mon_key = fresh.cephx.tickets.handlers[MON].session_key
        fetches = fresh.rotating_fetches
        assert not fresh.rotating_due() and fresh.refresh() == 0
        fresh.keep_fresh(interval=0.05)
        ahead[0] = 3700.0   # past the oldest rotating secret (1 h) and the mon ticket's renewal point
        deadline = time.monotonic() + 10
        while (fresh.rotating_fetches == fetches or fresh.cephx.tickets.handlers[MON].session_key == mon_key) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fresh.rotating_fetches > fetches
        assert fresh.cephx.tickets.handlers[MON].session_key != mon_key   # a renewed ticket
    finally:
        fresh.close()
        ms.shutdown()
        ms.wait()
