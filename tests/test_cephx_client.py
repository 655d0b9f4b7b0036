"""The cephx client exchange, offline: a recorded real-monitor exchange replayed byte for byte.

tests/data/cephx_vectors.json holds what a real ceph-mon 16 answered to
pymsgr's client (its random numbers drawn from random.Random(14)), so the
requests must come out identical and the replies must decode to the tickets
the monitor logged (auth ttl 72 h, service ttl 1 h, secret_id 2).
"""
from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import pytest

from msgr.auth import (
    AuthError,
    BadKeyError,
    CephxClient,
    CryptoKey,
    Keyring,
    NoTicketError,
    PermissionDeniedError,
    TicketExpiredError,
    UnsupportedAuthError,
    parse_entity_name,
)
from msgr.auth.cephx_wire import (
    CEPHX_GET_AUTH_SESSION_KEY,
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    Authenticate,
)
from msgr.auth.errors import AuthRefusedError
from msgr.encoding import Decoder
from msgr.entity import EntityName
from msgr.errors import DecodeError
from msgr.messages.auth import AuthNegotiation

VECTORS = json.loads((Path(__file__).parent / "data" / "cephx_vectors.json").read_text())
EXCHANGE = VECTORS["pymsgr_exchange"]["messages"]
T0 = 1_800_000_000.0
MON, OSD, MGR, AUTH = (EntityName.TYPE_MON, EntityName.TYPE_OSD, EntityName.TYPE_MGR,
                       EntityName.TYPE_AUTH)


def _client(key: CryptoKey | None = None) -> CephxClient:
    rnd = random.Random(14)
    key = key or Keyring.parse(VECTORS["keyring"]).get_key("client.admin")
    return CephxClient(parse_entity_name("client.admin"), key,
                       rng=lambda n: bytes(rnd.getrandbits(8) for _ in range(n)))


def _replay(client: CephxClient, now: float = T0) -> None:
    proto, payload = client.initial_request()
    for m in EXCHANGE:
        assert (proto, payload.hex()) == (m["request_protocol"], m["request"])
        nxt = client.handle_reply(m["reply_protocol"], m["result"], m["global_id"],
                                  bytes.fromhex(m["reply"]), now)
        if nxt is None:
            return
        proto, payload = 2, nxt
    raise AssertionError("the client wanted more than the recorded exchange")


def test_initial_request_is_a_negotiation_offering_cephx():
    proto, payload = _client().initial_request()
    neg = AuthNegotiation.decode(payload)
    assert proto == 0 and neg.methods == [2] and str(neg.name) == "client.admin"
    assert neg.global_id == 0


def test_recorded_exchange_replays_byte_for_byte():
    c = _client()
    _replay(c)
    assert c.authenticated and c.global_id == EXCHANGE[-1]["global_id"]
    t = c.tickets.handlers
    assert set(t) == {AUTH, MON, OSD, MGR}
    assert t[AUTH].validity == 72 * 3600 and t[MON].validity == 3600
    assert all(h.ticket.secret_id == 2 and h.ticket.blob for h in t.values())
    assert len({h.session_key.secret for h in t.values()}) == 4  # one session key per service
    # the second request is GET_AUTH_SESSION_KEY v3 asking for the other tickets at once
    req = Decoder(bytes.fromhex(EXCHANGE[1]["request"]))
    assert req.u16() == CEPHX_GET_AUTH_SESSION_KEY
    a = Authenticate.decode_from(req)
    assert a.version == 3 and a.other_keys == AUTH | MON | OSD | MGR and a.old_ticket.blob == b""


def test_wrong_key_cannot_open_the_reply():
    c = _client(CryptoKey.generate())
    proto, payload = c.initial_request()
    m0, m1 = EXCHANGE[0], EXCHANGE[1]
    c.handle_reply(2, 0, m0["global_id"], bytes.fromhex(m0["reply"]), T0)
    with pytest.raises(BadKeyError, match="wrong key"):
        c.handle_reply(2, 0, m1["global_id"], bytes.fromhex(m1["reply"]), T0)
    assert not c.authenticated


@pytest.mark.parametrize("result,cls", [
    (-errno.EACCES, PermissionDeniedError), (-errno.EPERM, PermissionDeniedError),
    (-errno.EOPNOTSUPP, UnsupportedAuthError), (-errno.EIO, AuthRefusedError),
])
def test_negative_results_are_typed(result, cls):
    c = _client()
    c.initial_request()
    with pytest.raises(cls) as ei:
        c.handle_reply(2, result, 0, b"", T0, "no")
    assert ei.value.result == result and errno.errorcode[-result] in str(ei.value)


def test_renewal_asks_for_service_tickets_then_the_auth_ticket():
    c = _client()
    _replay(c)
    assert not c.needs_renewal(T0 + 2000)
    # service tickets (1 h) are due after 3/4 of their validity
    assert c.needs_renewal(T0 + 2701)
    d = Decoder(c.build_request(T0 + 2701))
    assert d.u16() == CEPHX_GET_PRINCIPAL_SESSION_KEY
    # the auth ticket (72 h) at 54 h: a new session key, presenting the old ticket
    late = T0 + 54 * 3600 + 1
    d = Decoder(c.build_request(late))
    assert d.u16() == CEPHX_GET_AUTH_SESSION_KEY
    a = Authenticate.decode_from(d)
    assert a.old_ticket == c.tickets.handlers[AUTH].ticket and a.other_keys & AUTH


def test_expired_tickets_are_refused_with_typed_errors():
    c = _client()
    _replay(c)
    auth = c.build_authorizer(OSD, T0 + 10)
    assert auth.service_id == OSD and auth.payload.startswith(auth.base)
    with pytest.raises(TicketExpiredError, match="osd ticket expired"):
        c.build_authorizer(OSD, T0 + 3601)
    with pytest.raises(TicketExpiredError, match="auth ticket"):
        c.session_key(T0 + 72 * 3600 + 1)
    with pytest.raises(NoTicketError):
        c.build_authorizer(EntityName.TYPE_MDS, T0)


def _fresh_after_challenge() -> CephxClient:
    c = _client()
    c.initial_request()
    m0 = EXCHANGE[0]
    c.handle_reply(2, 0, m0["global_id"], bytes.fromhex(m0["reply"]), T0)
    return c


def _outcome(c: CephxClient, reply: bytes) -> str:
    """'error' (a clean typed error), 'again' (asks for what it lacks) or 'done'."""
    try:
        nxt = c.handle_reply(2, 0, 4099, reply, T0)
    except (DecodeError, AuthError):
        return "error"
    if nxt is None:
        assert c.authenticated
        return "done"
    # it holds a good auth ticket and asks the monitor for the rest
    assert c.tickets.handlers[AUTH].have_key(T0)
    assert Decoder(nxt).u16() == CEPHX_GET_PRINCIPAL_SESSION_KEY
    return "again"


def test_every_truncation_of_the_ticket_reply_is_a_clean_error():
    reply = bytes.fromhex(EXCHANGE[1]["reply"])
    seen = [_outcome(_fresh_after_challenge(), reply[:n]) for n in range(len(reply))]
    # cut inside the auth ticket: an error; cut in the extra tickets: ask for them again
    assert seen[:100] == ["error"] * 100 and "again" in seen and "done" not in seen


def test_garbage_and_flipped_replies_are_clean_errors():
    reply = bytes.fromhex(EXCHANGE[1]["reply"])
    rnd = random.Random(5)
    for i in range(300):
        c = _fresh_after_challenge()
        if i % 2:
            bad = bytearray(reply)
            bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
            bad = bytes(bad)
        else:
            bad = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(64)))
        _outcome(c, bad)


def test_wrong_struct_versions_are_refused():
    # server challenge with struct_v 0
    c = _client()
    c.initial_request()
    with pytest.raises(DecodeError, match="struct_v 0"):
        c.handle_reply(2, 0, 1, b"\x00" + b"\x01" * 8, T0)
    # ticket reply whose own struct_v is 0
    reply = bytearray.fromhex(EXCHANGE[1]["reply"])
    reply[6] = 0
    c = _fresh_after_challenge()
    with pytest.raises(DecodeError, match="struct_v 0"):
        c.handle_reply(2, 0, 4099, bytes(reply), T0)
    # a reply to a request we did not send
    reply = bytearray.fromhex(EXCHANGE[1]["reply"])
    reply[0:2] = CEPHX_GET_PRINCIPAL_SESSION_KEY.to_bytes(2, "little")
    c = _fresh_after_challenge()
    with pytest.raises(DecodeError, match="we sent"):
        c.handle_reply(2, 0, 4099, bytes(reply), T0)


def test_monitor_choosing_another_protocol_is_refused():
    c = _client()
    c.initial_request()
    with pytest.raises(AuthError, match="protocol 1"):
        c.handle_reply(1, 0, 5, b"", T0)
