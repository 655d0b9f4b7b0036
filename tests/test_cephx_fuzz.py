"""Bad input to the cephx servers: any bytes give a refusal, never an exception (hypothesis).

The service's authorizer check (msgr/auth/auth_server.py) and the monitor's MAuth handling
(msgr/auth/cephx_mon.py) read bytes from the network: random, truncated and bit-flipped versions
of real requests each get a verdict (BADAUTHORIZER / a negative result), and a flipped request
is never accepted.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from msgr.auth.auth_server import CephxAuthServer, ServiceSecrets
from msgr.auth.cephx_client import CephxClient
from msgr.auth.cephx_mon import CephxMonServer
from msgr.auth.keyring import CryptoKey, Keyring, parse_entity_name
from msgr.config import Config
from msgr.entity import EntityName

OSD, CLIENT = EntityName.TYPE_OSD, EntityName.TYPE_CLIENT
NOW = 1_800_000_000.0
KEY = CryptoKey(bytes(range(16)))


def _world() -> tuple[CephxMonServer, CephxClient, CephxAuthServer]:
    kr = Keyring()
    kr.add("client.admin", KEY, {"mon": "allow *"})
    mon = CephxMonServer(kr, NOW)
    c = CephxClient(parse_entity_name("client.admin"), KEY)
    c.initial_request()
    s = mon.new_session()
    nxt = c.handle_reply(2, 0, 4097, s.start(c.name, 4097), NOW)
    while nxt is not None:
        r, rep = s.handle(nxt, NOW)
        nxt = c.handle_reply(2, r, 0, rep, NOW)
    secrets = ServiceSecrets()
    secrets.set_rotating(OSD, mon.rotating[OSD])
    return mon, c, CephxAuthServer(secrets, OSD, Config(), clock=lambda: NOW)


MON, CLIENT_T, SERVER = _world()
GOOD = CLIENT_T.build_authorizer(OSD, NOW).payload


def test_the_unmodified_authorizer_is_challenged_then_accepted():
    a = CLIENT_T.build_authorizer(OSD, NOW)
    v = SERVER.verify_authorizer(CLIENT, 2, a.payload, None)
    assert v is not None and not v.ok and v.challenge is not None
    a.add_challenge(v.reply)
    v2 = SERVER.verify_authorizer(CLIENT, 2, a.payload, v.challenge)
    assert v2 is not None and v2.ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, 1, 12345]))
def test_random_authorizers_are_refused(blob, challenge):
    v = SERVER.verify_authorizer(CLIENT, 2, blob, challenge)
    assert v is not None and not v.ok


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) * 8 - 1), st.integers(0, len(GOOD)))
def test_flipped_or_cut_authorizers_are_never_accepted(bit, cut):
    blob = bytearray(GOOD)
    blob[bit // 8] ^= 1 << (bit % 8)
    for b in (bytes(blob), GOOD[:cut] if cut < len(GOOD) else bytes(blob)):
        v = SERVER.verify_authorizer(CLIENT, 2, b, None)
        assert v is not None and not v.ok   # at best a challenge, never accepted unanswered


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_mauth_payloads_get_a_negative_result(payload):
    s = MON.new_session()
    s.start(CLIENT_T.name, 4098)
    r, reply = s.handle(payload, NOW)
    assert r < 0 and reply == b"" and not s.authenticated
