"""The client's cephx handshake and message signing in ProtocolV1, sans-IO (no sockets, no clock).

The service's side is scripted from what a real ceph-osd 16 sends (docs/CEPHX.md, recorded in
tests/data/cephx_osd_vectors.json and replayed live in tests/test_cephx_osd.py): a sealed
challenge with no length prefix, then READY/SEQ with a bufferlist holding the sealed reply
(nonce + 1), then CEPHX_V2-signed messages. Here the bytes the OSD would send are built
with msgr.auth so that each wrong one can be tried: every case is a clean fault of the attempt.
"""
from __future__ import annotations

import struct

import pytest
from test_protocol_support import make_msg, msg_id, traffic_with_breaks

from msgr.auth.cephx_wire import Authorize, AuthorizeChallenge, AuthorizeReply, ServiceTicket, TicketBlob
from msgr.auth.crypto import seal, seal_bl, unseal_bl
from msgr.auth.errors import BadSignatureError
from msgr.auth.keyring import CryptoKey
from msgr.auth.signatures import sign_v2
from msgr.auth.tickets import Authorizer, TicketHandler
from msgr.crc import crc32c
from msgr.encoding import Decoder, Utime
from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, CEPHX_V2, MSG_AUTH
from msgr.policy import Policy
from msgr.protocol.actions import Deliver, Fault
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.wire import (
    FOOTER_COMPLETE,
    FOOTER_SIGNED,
    ConnectMsg,
    ConnectReply,
    MsgFooter,
    MsgHeader,
    Tag,
    pack_server_identify,
    pack_u64,
)

OSD = EntityName.TYPE_OSD
OSD_ADDR = EntityAddr.parse("v1:127.0.0.1:6800/777")
SOCK_PEER = EntityAddr.parse("v1:127.0.0.1:45000/0")
KEY = CryptoKey(bytes(range(16)))
GLOBAL_ID = 4242


class TicketAuthClient:
    """An auth client holding one OSD ticket (what CephxAuthClient does with a login's tickets)."""

    def __init__(self) -> None:
        self.handler = TicketHandler(OSD)
        self.handler.accept(ServiceTicket(KEY, Utime(3600, 0)), TicketBlob(2, b"opaque"), 0.0)
        self.built: list[Authorizer] = []

    def get_authorizer(self, peer_type: int) -> Authorizer | None:
        a = self.handler.build_authorizer(GLOBAL_ID, 1.0)
        self.built.append(a)
        return a


def _client() -> tuple[ProtocolV1, TicketAuthClient]:
    host = FakeHost(EntityName.client(), EntityAddr.parse("v1:0.0.0.0:0/4242"),
                    default_policy=Policy.lossy_client())
    ac = host.auth_client = TicketAuthClient()
    p = ProtocolV1(host)
    p.start_connect(OSD_ADDR, OSD, 0)
    p.on_connected(EntityAddr.parse("v1:127.0.0.1:45000/0"), 0)
    p.take_output()
    p.receive_data(pack_server_identify(OSD_ADDR, SOCK_PEER), 0)
    return p, ac


def _out(p: ProtocolV1) -> bytes:
    return b"".join(bytes(b) for b in p.take_output())


def _connect_sent(out: bytes) -> tuple[ConnectMsg, Authorize]:
    c = ConnectMsg.unpack(out)
    blob = out[ConnectMsg.SIZE:ConnectMsg.SIZE + c.authorizer_len]
    d = Decoder(blob, what="authorizer")
    assert d.u8() == 1 and d.u64() == GLOBAL_ID and d.u32() == OSD
    TicketBlob.decode_from(d)
    return c, Authorize.decode(unseal_bl(KEY.secret, d))


def _reply(tag: Tag, auth: bytes = b"") -> bytes:
    features = CEPH_FEATURES_ALL_PACIFIC
    return ConnectReply(tag, features, 9, 1, 24, len(auth), 1).pack() + auth


def _challenge(value: int) -> bytes:
    return seal(KEY.secret, AuthorizeChallenge(value).encode())   # no length prefix (observed)


def _open(p: ProtocolV1, ac: TicketAuthClient) -> Authorizer:
    """CHALLENGE_AUTHORIZER, the answered connect, SEQ with the proof: the session is OPEN."""
    first = _out(p)
    c, body = _connect_sent(first[136:])
    assert (c.authorizer_protocol, body.have_challenge) == (2, False)
    p.receive_data(_reply(Tag.CHALLENGE_AUTHORIZER, _challenge(1000)), 0)
    c2, body2 = _connect_sent(_out(p))
    a = ac.built[0]
    assert len(ac.built) == 1   # the same authorizer, resealed with the answer
    assert (body2.nonce, body2.have_challenge, body2.server_challenge_plus_one) == (a.nonce, True, 1001)
    acts = p.receive_data(_reply(Tag.SEQ, seal_bl(KEY.secret, AuthorizeReply(a.nonce + 1).encode()))
                          + pack_u64(0), 0)
    assert not [x for x in acts if isinstance(x, Fault)], acts
    assert p.state is State.OPEN and _out(p) == pack_u64(0)   # our in_seq for the SEQ exchange
    return a


def _signed_msg(seq: int, front: bytes, sig_xor: int = 0, signed: bool = True) -> bytes:
    raw = MsgHeader(seq=seq, tid=seq, type=0x7FFF, front_len=len(front), src_type=OSD, src_num=0).pack()
    h = MsgHeader.unpack(raw)
    fc = crc32c(0, front)
    sig = sign_v2(KEY.secret, h.crc, fc, len(front), 0, 0, 0, 0, seq) ^ sig_xor if signed else 0
    flags = FOOTER_COMPLETE | (FOOTER_SIGNED if signed else 0)
    return bytes([Tag.MSG]) + raw + front + MsgFooter(fc, 0, 0, sig, flags).pack()


def test_challenge_answered_reply_verified_and_both_directions_signed():
    p, ac = _client()
    _open(p, ac)
    assert p.features & (MSG_AUTH | CEPHX_V2) == MSG_AUTH | CEPHX_V2 and p._signer is not None
    # outgoing: the footer carries the CEPHX_V2 signature and the SIGNED flag
    p.send_message(make_msg(1), 0)
    out = _out(p)
    assert out[0] == Tag.MSG
    h = MsgHeader.unpack(out, 1)
    body = out[1 + MsgHeader.SIZE:1 + MsgHeader.SIZE + h.front_len]
    f = MsgFooter.unpack(out, 1 + MsgHeader.SIZE + h.front_len)
    assert f.flags == FOOTER_COMPLETE | FOOTER_SIGNED
    assert f.sig == sign_v2(KEY.secret, h.crc, crc32c(0, body), h.front_len, 0, 0, 0, 0, h.seq)
    # incoming: several well-signed messages in one read (the batch path stands aside)
    acts = p.receive_data(b"".join(_signed_msg(i, b"hello %d" % i) for i in (1, 2, 3)), 0)
    assert [m.header.seq for a in acts if isinstance(a, Deliver) for m in a.msgs] == [1, 2, 3]
    assert p._signer.checked == 3


@pytest.mark.parametrize("case", ["flipped bit", "unsigned"])
def test_a_bad_signature_faults_the_session_with_a_warning(case):
    p, ac = _client()
    _open(p, ac)
    bad = _signed_msg(1, b"x", sig_xor=1) if case == "flipped bit" else _signed_msg(1, b"x", signed=False)
    acts = p.receive_data(bad, 0)
    faults = [a for a in acts if isinstance(a, Fault)]
    assert not [a for a in acts if isinstance(a, Deliver)]
    assert len(faults) == 1 and isinstance(faults[0].error, BadSignatureError) and faults[0].notable
    assert p.state is State.CLOSED   # a lossy session: reset


@pytest.mark.parametrize("reply", [
    b"",                                                          # no proof at all
    seal_bl(KEY.secret, AuthorizeReply(12345).encode()),          # a wrong nonce + 1
    seal_bl(bytes(16), AuthorizeReply(1).encode()),               # sealed with another key
    b"\x10\x00\x00\x00" + bytes(16),                               # garbage
    b"\xff\xff\xff\x7f",                                           # a length beyond the bytes
])
def test_an_authorizer_reply_that_proves_nothing_faults(reply):
    p, ac = _client()
    _out(p)
    acts = p.receive_data(_reply(Tag.READY, reply), 0)
    assert any(isinstance(a, Fault) for a in acts) and p.state is not State.OPEN


@pytest.mark.parametrize("challenge", [b"", bytes(32), b"\x01" * 17, seal(bytes(16), b"\x01" * 9)])
def test_a_challenge_we_cannot_open_faults(challenge):
    p, ac = _client()
    _out(p)
    acts = p.receive_data(_reply(Tag.CHALLENGE_AUTHORIZER, challenge), 0)
    assert any(isinstance(a, Fault) for a in acts) and p.state is not State.OPEN


def test_a_peer_that_keeps_challenging_is_given_up():
    p, ac = _client()
    _out(p)
    acts: list = []
    for i in range(4):
        acts = p.receive_data(_reply(Tag.CHALLENGE_AUTHORIZER, _challenge(i)), 0)
        _out(p)
    assert any(isinstance(a, Fault) and "challenged our authorizer 4 times" in a.reason for a in acts)


def test_badauthorizer_faults_and_the_next_attempt_builds_a_new_authorizer():
    host = FakeHost(EntityName.client(), EntityAddr.parse("v1:0.0.0.0:0/4242"),
                    default_policy=Policy.lossless_peer())
    ac = host.auth_client = TicketAuthClient()
    p = ProtocolV1(host)
    p.start_connect(OSD_ADDR, OSD, 0)
    p.on_connected(SOCK_PEER, 0)
    p.send_message(make_msg(1), 0)
    p.take_output()
    p.receive_data(pack_server_identify(OSD_ADDR, SOCK_PEER), 0)
    _out(p)
    acts = p.receive_data(_reply(Tag.BADAUTHORIZER), 0)
    assert any(isinstance(a, Fault) and "BADAUTHORIZER" in a.reason for a in acts)
    from msgr.protocol.actions import TimerKind
    p.on_timer(TimerKind.RECONNECT, 10**9)
    p.on_connected(SOCK_PEER, 10**9)
    p.take_output()
    p.receive_data(pack_server_identify(OSD_ADDR, SOCK_PEER), 10**9)
    _out(p)
    assert len(ac.built) == 2 and ac.built[0].nonce != ac.built[1].nonce


def test_signing_off_sends_unsigned_footers():
    p, ac = _client()
    p.host.config.cephx_sign_messages = False
    _open(p, ac)
    assert p._signer is None
    p.send_message(make_msg(1), 0)
    out = _out(p)
    h = MsgHeader.unpack(out, 1)
    f = MsgFooter.unpack(out, 1 + MsgHeader.SIZE + h.front_len)
    assert f.sig == 0 and not f.flags & FOOTER_SIGNED
    assert struct.unpack_from("<B", out)[0] == Tag.MSG


# --- both roles in pymsgr: a cephx client and a cephx service over the in-memory WireNet --------------------
def _cephx_pair(seed: int):
    """osd.1 (client: a ticket for the OSD service) -> osd.2 (service: the rotating secret it was sealed with)."""
    from msgr.auth.auth_server import CephxAuthServer, ServiceSecrets
    from msgr.auth.cephx_wire import AuthTicket, ExpiringKey, RotatingSecrets, ServiceTicketInfo
    from msgr.encoding import AuthEntityName
    from msgr.sim.wire_pair import WireNet

    a_addr, b_addr = EntityAddr.parse("v1:10.0.0.1:6800/11"), EntityAddr.parse("v1:10.0.0.2:6800/22")
    rotating = CryptoKey(bytes(range(100, 116)))
    net = WireNet(seed=seed, max_chunk=3000)
    a = net.add_host(FakeHost(EntityName.osd(1), a_addr, default_policy=Policy.lossless_peer(), seed=1))
    b = net.add_host(FakeHost(EntityName.osd(2), b_addr, default_policy=Policy.lossless_peer(), seed=2))
    secrets = ServiceSecrets()
    secrets.set_rotating(OSD, RotatingSecrets({7: ExpiringKey(rotating, Utime(4_000_000_000, 0))}, 7))
    b.auth_server = CephxAuthServer(secrets, OSD, b.config, clock=lambda: 1000.0)
    info = ServiceTicketInfo(AuthTicket(AuthEntityName(OSD, "1"), GLOBAL_ID, Utime(900, 0), Utime(4_000_000_000, 0)),
                             KEY)
    ac = a.auth_client = TicketAuthClient()
    ac.handler.accept(ServiceTicket(KEY, Utime(3600, 0)), TicketBlob(7, seal(rotating.secret, info.encode())), 0.0)
    return net, a, b, a_addr, b_addr


@pytest.mark.parametrize("seed", range(3))
def test_lossless_cephx_session_survives_faults_signed_both_ways(seed):
    net, a, b, a_addr, b_addr = _cephx_pair(seed)
    p = net.connect(a, b_addr, OSD)
    n = 300
    assert traffic_with_breaks(net, p, b, a_addr, n, every=10) >= 3
    assert [msg_id(m) for m in net.messages(b)] == list(range(n))
    s = b.conns[a_addr]
    assert p.is_connected() and s.is_connected()
    assert p._signer is not None and s._signer is not None
    assert b.auth_server.accepted >= 2 and b.auth_server.refused == 0   # reconnects were authorized anew
    assert len(a.auth_client.built) == b.auth_server.challenged   # a fresh authorizer per attempt, each challenged
    assert not [e for e in net.events(kind=Fault) if isinstance(e.error, BadSignatureError)]


def test_service_refuses_a_client_without_a_ticket_and_the_client_backs_off():
    net, a, b, a_addr, b_addr = _cephx_pair(0)
    a.auth_client = None   # auth none toward a service that requires cephx
    p = net.connect(a, b_addr, OSD)
    net.send(p, make_msg(1))
    net.run(max_time_us=2_000_000)
    assert not p.is_connected() and not net.messages(b)
    assert any("BADAUTHORIZER" in f.reason for f in net.events(p, Fault))
    assert b.auth_server.refused >= 1 and "requires cephx" in b.auth_server.last_refusal


def test_cephx_require_signatures_refuses_a_peer_that_cannot_sign():
    """Client side: a service whose reply lacks MSG_AUTH is given up (it could not sign)."""
    p, ac = _client()
    p.host.config.cephx_require_signatures = True
    _out(p)
    p.receive_data(_reply(Tag.CHALLENGE_AUTHORIZER, _challenge(5)), 0)
    _out(p)
    a = ac.built[0]
    proof = seal_bl(KEY.secret, AuthorizeReply(a.nonce + 1).encode())
    r = ConnectReply(Tag.READY, CEPH_FEATURES_ALL_PACIFIC & ~MSG_AUTH, 9, 1, 24, len(proof), 1).pack() + proof
    acts = p.receive_data(r, 0)
    assert any(isinstance(x, Fault) and "cannot sign" in x.reason for x in acts) and p.state is not State.OPEN


@pytest.mark.parametrize("option, peer_type, refused", [
    ("cephx_service_require_signatures", EntityName.TYPE_CLIENT, True),
    ("cephx_service_require_signatures", OSD, False),
    ("cephx_cluster_require_signatures", OSD, True),
    ("cephx_cluster_require_signatures", EntityName.TYPE_CLIENT, False),
    ("cephx_require_signatures", EntityName.TYPE_CLIENT, True),
])
def test_service_requires_msg_auth_of_cephx_peers_as_configured(option, peer_type, refused):
    """Service side: a cephx connect without MSG_AUTH gets FEATURES where the options require signing."""
    from test_protocol_support import RawPeer
    host = FakeHost(EntityName.osd(2), EntityAddr.parse("v1:10.0.0.2:6800/22"))
    setattr(host.config, option, True)
    peer = RawPeer(host)
    r, _ = peer.connect(host_type=peer_type, proto=24 if peer_type == EntityName.TYPE_CLIENT else 10,
                        features=CEPH_FEATURES_ALL_PACIFIC & ~MSG_AUTH, auth_proto=2, auth=b"\x01" * 20)
    assert (Tag(r.tag) is Tag.FEATURES) == refused
    if refused:
        assert r.features & MSG_AUTH
