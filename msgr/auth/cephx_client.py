"""The client side of cephx with a monitor, sans-IO (payloads in, payloads out).

The exchange over MAuth/MAuthReply:

1. protocol 0 (negotiate): u8 v=1, the methods we accept ([CEPHX]), our
   name, our global_id (0 at first). The monitor picks cephx, assigns a
   global_id and answers a :class:`ServerChallenge` with result 0.
2. protocol CEPHX, ``CEPHX_GET_AUTH_SESSION_KEY``: a random client challenge,
   the proof (the {server, client} challenges sealed with our secret, folded
   into one u64), the old AUTH ticket (empty at first), and the other tickets
   wanted. The reply carries the AUTH ticket (sealed with our secret) and,
   after it, a connection secret and the other tickets (sealed with the new
   session key).
3. ``CEPHX_GET_PRINCIPAL_SESSION_KEY`` (only if tickets are still missing):
   an authorizer built from the AUTH ticket + the wanted bitmask; the reply's
   tickets are sealed with the AUTH session key.

Renewal repeats 2 (the AUTH ticket, with the same server challenge and the
old ticket) or 3 once a ticket is three quarters through its validity.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable

from msgr.auth.cephx_wire import (
    CEPHX_GET_AUTH_SESSION_KEY,
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    CEPHX_GET_ROTATING_KEY,
    REQUEST_NAMES,
    Authenticate,
    ChallengeBlob,
    ResponseHeader,
    RotatingSecrets,
    ServerChallenge,
    ServiceTicketRequest,
)
from msgr.auth.crypto import seal_bl, unseal_bl
from msgr.auth.errors import AuthError, BadKeyError, TicketExpiredError, refusal
from msgr.auth.keyring import CryptoKey
from msgr.auth.tickets import ENTITY_AUTH, Authorizer, TicketManager
from msgr.encoding import AuthEntityName, Decoder, Encoder
from msgr.entity import EntityName
from msgr.errors import DecodeError
from msgr.messages.auth import CEPH_AUTH_CEPHX, CEPH_AUTH_UNKNOWN, AuthNegotiation

__all__ = ["CephxClient", "fold_challenge", "DEFAULT_WANT"]

DEFAULT_WANT = EntityName.TYPE_MON | EntityName.TYPE_OSD | EntityName.TYPE_MGR
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fold_challenge(secret: CryptoKey, server_challenge: int, client_challenge: int) -> int:
    """The client's proof of its key: XOR of the sealed challenge blob read as LE u64 words.

    The words are taken from the ``encode_encrypt`` form, i.e. including its
    u32 length prefix (a 36-byte blob gives 4 words; the last 4 bytes are left out).
    """
    enc = seal_bl(secret.secret, ChallengeBlob(server_challenge, client_challenge).encode())
    k = 0
    for pos in range(0, len(enc) - 7, 8):
        k ^= int.from_bytes(enc[pos:pos + 8], "little")
    return k


class CephxClient:
    """One client's cephx state with its monitor.

    Call :meth:`initial_request`, then feed every MAuthReply to
    :meth:`handle_reply` and send back what it returns (protocol CEPHX) until
    it returns ``None``; :attr:`authenticated` is then true. ``now`` is the
    wall-clock time in seconds, passed in by the caller.
    """

    def __init__(self, name: AuthEntityName, key: CryptoKey, want: int = DEFAULT_WANT,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.name = name
        self.key = key
        self.want = want | ENTITY_AUTH
        self.rng = rng
        self.tickets = TicketManager()
        self.server_challenge: int | None = None
        self.authenticated = False
        self.protocol = CEPH_AUTH_UNKNOWN
        self._pending: int | None = None  # request type we wait the answer of
        self.extra_ticket_error = ""  # why the tickets that came with the session key were bad
        self.rotating: RotatingSecrets | None = None  # a service's secrets (CEPHX_GET_ROTATING_KEY)

    @property
    def global_id(self) -> int:
        return self.tickets.global_id

    # --- requests -------------------------------------------------------------
    def initial_request(self, global_id: int = 0) -> tuple[int, bytes]:
        """(protocol 0, payload) of the first MAuth: we accept cephx only."""
        self.server_challenge = None
        self.authenticated = False
        return CEPH_AUTH_UNKNOWN, AuthNegotiation([CEPH_AUTH_CEPHX], self.name, global_id).encode()

    def need(self, now: float) -> int:
        return self.tickets.have_need(self.want, now)[1]

    def need_tickets(self, now: float) -> bool:
        """Something wanted is missing or due for renewal (MGR alone does not count, as in Ceph)."""
        n = self.need(now)
        return bool(n) and n != EntityName.TYPE_MGR

    def build_request(self, now: float) -> bytes:
        """The next cephx request for what is needed now (session key, or service tickets)."""
        if self.server_challenge is None:
            raise AuthError("no server challenge yet: send the initial request first")
        need = self.need(now)
        e = Encoder()
        if need & ENTITY_AUTH:
            e.u16(CEPHX_GET_AUTH_SESSION_KEY)
            cc = int.from_bytes(self.rng(8), "little")
            proof = fold_challenge(self.key, self.server_challenge, cc)
            old = self.tickets.handler(ENTITY_AUTH).ticket
            Authenticate(cc, proof, old, need).encode_into(e)
            self._pending = CEPHX_GET_AUTH_SESSION_KEY
        else:
            e.u16(CEPHX_GET_PRINCIPAL_SESSION_KEY)
            auth = self.tickets.build_authorizer(ENTITY_AUTH, now, self.rng)
            e.raw(auth.payload)
            ServiceTicketRequest(need).encode_into(e)
            self._pending = CEPHX_GET_PRINCIPAL_SESSION_KEY
        return e.getvalue()

    def build_rotating_request(self) -> bytes:
        """CEPHX_GET_ROTATING_KEY (a daemon entity, once authenticated): the secrets its service
        type's tickets are sealed with. The monitor answers them sealed with our own key."""
        if not self.authenticated:
            raise AuthError("rotating keys are asked for on an authenticated session")
        self._pending = CEPHX_GET_ROTATING_KEY
        return Encoder().u16(CEPHX_GET_ROTATING_KEY).getvalue()

    # --- replies --------------------------------------------------------------
    def handle_reply(self, protocol: int, result: int, global_id: int, payload: bytes,
                     now: float, message: str = "") -> bytes | None:
        """Take one MAuthReply; returns the next request payload, or None when done.

        Raises :class:`~msgr.auth.errors.AuthRefusedError` subclasses for a
        negative result, :class:`BadKeyError` when our key does not open the
        reply, :class:`DecodeError` for a malformed one.
        """
        stage = REQUEST_NAMES.get(self._pending or 0, "negotiation")
        if result < 0:
            raise refusal(result, message, stage)
        if protocol != CEPH_AUTH_CEPHX:
            raise AuthError(f"monitor chose auth protocol {protocol}, we speak cephx (2) only")
        if global_id:
            self.tickets.global_id = global_id
        self.protocol = protocol
        d = Decoder(payload, what="cephx reply")
        if self.server_challenge is None:
            self.server_challenge = ServerChallenge.decode_from(d).server_challenge
            self.tickets.handler(ENTITY_AUTH).invalidate()
            return self.build_request(now)
        hdr = ResponseHeader.decode_from(d)
        if hdr.request_type != self._pending:
            raise DecodeError(f"cephx reply to request {hdr.request_type:#x}, we sent "
                              f"{(self._pending or 0):#x}")
        if hdr.status < 0:
            raise refusal(hdr.status, message, stage)
        if hdr.request_type == CEPHX_GET_AUTH_SESSION_KEY:
            self._read_session_key_reply(d, now)
        elif hdr.request_type == CEPHX_GET_PRINCIPAL_SESSION_KEY:
            auth_key = self.tickets.handler(ENTITY_AUTH).session_key
            if auth_key is None:
                raise AuthError("service tickets arrived before the auth session key")
            self.tickets.read_ticket_reply(auth_key, d, now)
        elif hdr.request_type == CEPHX_GET_ROTATING_KEY:
            try:
                self.rotating = RotatingSecrets.decode(unseal_bl(self.key.secret, d))
            except BadKeyError as exc:
                raise BadKeyError(f"our key for {self.name} does not open the rotating secrets: "
                                  f"{exc}") from None
        self._pending = None
        if self.need_tickets(now):
            return self.build_request(now)
        self.authenticated = True
        return None

    def _read_session_key_reply(self, d: Decoder, now: float) -> None:
        try:
            got = self.tickets.read_ticket_reply(self.key, d, now)
        except BadKeyError as exc:
            raise BadKeyError(f"our key for {self.name} does not open the monitor's reply "
                              f"(wrong key?): {exc}") from None
        session = self.tickets.handler(ENTITY_AUTH).session_key
        if ENTITY_AUTH not in got or session is None:
            raise DecodeError(f"session key reply holds no auth ticket (services {got})")
        if d.at_end():
            return
        conn_bl = d.bytes()   # a connection secret (msgr2 secure mode; unused on v1)
        extra = d.bytes()     # the other tickets asked for, sealed with the new session key
        del conn_bl
        if extra:
            # As Ceph: tickets that do not verify here are asked for again
            # (GET_PRINCIPAL_SESSION_KEY); the auth ticket above stands.
            try:
                self.tickets.read_ticket_reply(session, Decoder(extra, what="extra tickets"), now)
            except (DecodeError, AuthError) as exc:
                self.extra_ticket_error = str(exc)

    # --- using tickets --------------------------------------------------------
    def session_key(self, now: float) -> CryptoKey:
        """The AUTH session key (what the monitor session is keyed with)."""
        h = self.tickets.handler(ENTITY_AUTH)
        if h.session_key is None:
            raise AuthError("not authenticated")
        if not h.have_key(now):
            raise TicketExpiredError(f"the auth ticket expired {now - h.expires:.1f} s ago")
        return h.session_key

    def build_authorizer(self, service_id: int, now: float) -> Authorizer:
        """An authorizer for a daemon of type ``service_id`` (OSD, MGR, MDS, MON)."""
        return self.tickets.build_authorizer(service_id, now, self.rng)

    def needs_renewal(self, now: float) -> bool:
        return self.authenticated and self.need_tickets(now)

    @staticmethod
    def result_name(result: int) -> str:
        return errno.errorcode.get(-result, str(result)) if result < 0 else "ok"
