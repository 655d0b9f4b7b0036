"""Service tickets as a cephx client holds them, and the authorizers built from them.

One :class:`TicketHandler` per service (AUTH, MON, OSD, MGR, MDS): the
session key shared with that service, the opaque ticket blob, and when the
ticket expires and should be renewed (three quarters into its validity, as
Ceph does). Times are plain floats (seconds, wall clock) passed in by the
caller: nothing here reads a clock.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from msgr.auth.cephx_wire import (
    Authorize,
    AuthorizeChallenge,
    AuthorizeReply,
    ServiceTicket,
    TicketBlob,
    struct_v,
)
from msgr.auth.crypto import seal_bl, unseal, unseal_bl
from msgr.auth.errors import BadAuthorizerReplyError, BadKeyError, NoTicketError, TicketExpiredError
from msgr.auth.keyring import CryptoKey
from msgr.auth.signatures import SessionSigner
from msgr.encoding import Decoder, Encoder
from msgr.entity import EntityName
from msgr.errors import DecodeError

__all__ = ["TicketHandler", "TicketManager", "Authorizer", "ENTITY_AUTH"]

ENTITY_AUTH = EntityName.TYPE_AUTH
CEPH_AUTH_CEPHX = 2
# A ticket reply names at most one ticket per entity type; anything more is garbage.
_MAX_TICKETS = 8


def _u64(rng: Callable[[int], bytes]) -> int:
    return int.from_bytes(rng(8), "little")


@dataclass(slots=True)
class Authorizer:
    """What a client puts in ``ceph_msg_connect`` to prove its ticket to a service.

    ``base`` is everything before the sealed :class:`Authorize`, kept so that a
    challenge from the service can be answered by resealing (:meth:`add_challenge`).
    """

    service_id: int
    session_key: CryptoKey
    nonce: int
    base: bytes
    payload: bytes
    protocol: int = CEPH_AUTH_CEPHX   # the authorizer_protocol of ceph_msg_connect

    def add_challenge(self, sealed_challenge: bytes) -> None:
        """Answer the service's challenge (CHALLENGE_AUTHORIZER): reseal with challenge + 1."""
        ch = AuthorizeChallenge.decode(unseal(self.session_key.secret, sealed_challenge))
        body = Authorize(self.nonce, True, (ch.server_challenge + 1) & 0xFFFFFFFFFFFFFFFF)
        self.payload = self.base + seal_bl(self.session_key.secret, body.encode())

    def verify_reply(self, reply: bytes) -> AuthorizeReply:
        """Check the service's reply proves it opened our ticket (nonce + 1)."""
        d = Decoder(reply, what="authorizer reply")
        try:
            r = AuthorizeReply.decode(unseal_bl(self.session_key.secret, d))
        except BadKeyError as exc:
            raise BadAuthorizerReplyError(f"authorizer reply not sealed with our session key: {exc}") from None
        want = (self.nonce + 1) & 0xFFFFFFFFFFFFFFFF
        if r.nonce_plus_one != want:
            raise BadAuthorizerReplyError(f"authorizer reply carries nonce+1 {r.nonce_plus_one:#x}, "
                                          f"expected {want:#x}")
        return r

    def signer(self, features: int, sign_messages: bool) -> SessionSigner | None:
        """The session's message signer once the service accepted us (None: no signing)."""
        return SessionSigner.for_session(self.session_key.secret, features, sign_messages)


@dataclass(slots=True)
class TicketHandler:
    """One service's ticket: session key, blob, expiry."""

    service_id: int
    session_key: CryptoKey | None = None
    ticket: TicketBlob = TicketBlob()
    validity: float = 0.0
    expires: float = 0.0
    renew_after: float = 0.0
    _have: bool = False

    def accept(self, tk: ServiceTicket, blob: TicketBlob, now: float) -> None:
        self.session_key = tk.session_key
        self.ticket = blob
        self.validity = float(tk.validity)
        if self.validity:
            self.expires = now + self.validity
            self.renew_after = self.expires - tk.validity.sec / 4
        else:
            self.expires = self.renew_after = 0.0
        self._have = True

    def have_key(self, now: float) -> bool:
        """A usable (unexpired) session key."""
        return self._have and (self.expires == 0.0 or now < self.expires)

    def need_key(self, now: float) -> bool:
        """No key yet, or one due for renewal."""
        if not self._have:
            return True
        return self.expires != 0.0 and now >= self.renew_after

    def invalidate(self) -> None:
        self._have = False

    def build_authorizer(self, global_id: int, now: float,
                         rng: Callable[[int], bytes] = os.urandom) -> Authorizer:
        name = EntityName.type_name(self.service_id)
        if self.session_key is None:
            raise NoTicketError(f"no {name} ticket to build an authorizer from")
        if not self.have_key(now):
            raise TicketExpiredError(f"the {name} ticket expired {now - self.expires:.1f} s ago")
        e = Encoder().u8(1).u64(global_id).u32(self.service_id)
        self.ticket.encode_into(e)
        base = e.getvalue()
        nonce = _u64(rng)
        payload = base + seal_bl(self.session_key.secret, Authorize(nonce).encode())
        return Authorizer(self.service_id, self.session_key, nonce, base, payload)


@dataclass(slots=True)
class TicketManager:
    """Every ticket of one client, keyed by entity type."""

    global_id: int = 0
    handlers: dict[int, TicketHandler] = field(default_factory=dict)

    def handler(self, service_id: int) -> TicketHandler:
        h = self.handlers.get(service_id)
        if h is None:
            h = self.handlers[service_id] = TicketHandler(service_id)
        return h

    def have_need(self, want: int, now: float) -> tuple[int, int]:
        """(have, need) bitmasks over the entity types in ``want``."""
        have = need = 0
        bit = 1
        while bit <= want:
            if want & bit:
                h = self.handlers.get(bit)
                if h is None or h.need_key(now):
                    need |= bit
                if h is not None and h.have_key(now):
                    have |= bit
            bit <<= 1
        return have, need

    def read_ticket_reply(self, principal_secret: CryptoKey, d: Decoder, now: float) -> list[int]:
        """Decode a service ticket reply sealed with ``principal_secret``; returns the services.

        Per ticket: u32 service_id, u8 v, the sealed :class:`ServiceTicket`,
        u8 "ticket blob is sealed with the old session key", then the blob.
        A wrong ``principal_secret`` raises :class:`BadKeyError`.
        """
        struct_v(d, "service ticket reply")
        n = d.u32()
        if n > _MAX_TICKETS:
            raise DecodeError(f"service ticket reply claims {n} tickets")
        got = []
        for _ in range(n):
            service_id = d.u32()
            struct_v(d, "service ticket")
            tk = ServiceTicket.decode(unseal_bl(principal_secret.secret, d))
            h = self.handler(service_id)
            if d.u8():
                if h.session_key is None:
                    raise DecodeError("ticket blob sealed with a session key we do not have")
                blob_bl = unseal_bl(h.session_key.secret, d)
            else:
                blob_bl = d.bytes()
            blob = TicketBlob.decode_from(Decoder(blob_bl, what="ticket blob"))
            h.accept(tk, blob, now)
            got.append(service_id)
        return got

    def build_authorizer(self, service_id: int, now: float,
                         rng: Callable[[int], bytes] = os.urandom) -> Authorizer:
        h = self.handlers.get(service_id)
        if h is None:
            raise NoTicketError(f"no {EntityName.type_name(service_id)} ticket")
        return h.build_authorizer(self.global_id, now, rng)
