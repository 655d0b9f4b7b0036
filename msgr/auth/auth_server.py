"""A pymsgr service's side of cephx: verifying the authorizers in incoming connects.

:class:`CephxAuthServer` implements :class:`msgr.protocol.host.AuthServer`. A client's
authorizer carries its ticket for our service type, sealed by the monitor with one of that
type's rotating secrets (``secret_id`` says which); :class:`ServiceSecrets` holds them (fetched
with ``CEPHX_GET_ROTATING_KEY``, see ``msgr.monc.MonAuth.serve``). Opening the ticket gives
the client's name, global_id, validity and the session key; the sealed part of the authorizer
must open with that key. As a real ceph-osd 16 does (docs/CEPHX.md), the first authorizer on
a socket is always challenged (a random u64 sealed with the session key), and only an
authorizer answering that challenge (challenge + 1) is accepted: a replayed authorizer, even
one that answered an earlier challenge, meets a new challenge it cannot answer. The accepted
connect's reply proves we opened the ticket (nonce + 1), and the session key signs the session.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from msgr.auth.cephx_wire import (
    Authorize,
    AuthorizeChallenge,
    AuthorizeReply,
    RotatingSecrets,
    ServiceTicketInfo,
    TicketBlob,
    struct_v,
)
from msgr.auth.crypto import seal, seal_bl, unseal, unseal_bl
from msgr.auth.errors import AuthError
from msgr.auth.keyring import CryptoKey
from msgr.auth.settings import parse_methods
from msgr.auth.signatures import SessionSigner
from msgr.config import Config
from msgr.encoding import Decoder
from msgr.entity import EntityName
from msgr.errors import DecodeError
from msgr.messages.auth import CEPH_AUTH_CEPHX, CEPH_AUTH_NONE
from msgr.protocol.host import AuthVerdict, MessageSigner

__all__ = ["ServiceSecrets", "CephxAuthServer"]

_MASK64 = 0xFFFFFFFFFFFFFFFF


class ServiceSecrets:
    """Rotating secrets by service type and secret_id (thread-safe: replaced on refresh)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[int, RotatingSecrets] = {}

    def set_rotating(self, service_id: int, secrets: RotatingSecrets) -> None:
        with self._lock:
            self._by_type[service_id] = secrets

    def get(self, service_id: int, secret_id: int) -> CryptoKey | None:
        with self._lock:
            rs = self._by_type.get(service_id)
        if rs is None:
            return None
        k = rs.secrets.get(secret_id)
        return None if k is None else k.key

    def secret_ids(self, service_id: int) -> list[int]:
        with self._lock:
            rs = self._by_type.get(service_id)
        return sorted(rs.secrets) if rs is not None else []


class CephxAuthServer:
    """Verifies incoming authorizers for a service of type ``my_type``.

    Which methods a peer may use: ``auth_service_required`` for client peers,
    ``auth_cluster_required`` for daemons (Ceph's options, from ``config``). ``clock`` is the wall
    clock (ticket expiry), ``rng`` makes challenges. ``refused`` counts BADAUTHORIZER verdicts.
    """

    def __init__(self, secrets: ServiceSecrets, my_type: int, config: Config,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.secrets = secrets
        self.my_type = my_type
        self.config = config
        self.clock = clock
        self.rng = rng
        self.accepted = 0
        self.challenged = 0
        self.refused = 0
        self.last_refusal = ""

    def _methods(self, peer_type: int) -> list[int]:
        text = (self.config.auth_service_required if peer_type == EntityName.TYPE_CLIENT
                else self.config.auth_cluster_required)
        return parse_methods(text)

    def verify_authorizer(self, peer_type: int, protocol: int, blob: bytes,
                          challenge: object) -> AuthVerdict | None:
        methods = self._methods(peer_type)
        if protocol != CEPH_AUTH_CEPHX:
            if CEPH_AUTH_NONE in methods:
                return None   # the handshake's auth-none rule decides
            return self._refuse(f"authorizer protocol {protocol} from a {EntityName.type_name(peer_type)}: "
                                f"this service requires cephx")
        if CEPH_AUTH_CEPHX not in methods:
            return self._refuse("a cephx authorizer, but this service does not allow cephx")
        try:
            return self._verify_cephx(blob, challenge)
        except (DecodeError, AuthError) as exc:
            return self._refuse(f"{type(exc).__name__}: {exc}")

    def _refuse(self, reason: str) -> AuthVerdict:
        self.refused += 1
        self.last_refusal = reason
        return AuthVerdict(False, reason=reason)

    def _verify_cephx(self, blob: bytes, challenge: object) -> AuthVerdict:
        d = Decoder(blob, what="cephx authorizer")
        struct_v(d, "CephXAuthorizer")
        global_id, service_id = d.u64(), d.u32()
        ticket = TicketBlob.decode_from(d)
        if service_id != self.my_type:
            return self._refuse(f"a ticket for service {EntityName.type_name(service_id)}, we are "
                                f"{EntityName.type_name(self.my_type)}")
        secret = self.secrets.get(service_id, ticket.secret_id)
        if secret is None:
            return self._refuse(f"no rotating secret {ticket.secret_id} for "
                                f"{EntityName.type_name(service_id)} (have {self.secrets.secret_ids(service_id)})")
        info = ServiceTicketInfo.decode(unseal(secret.secret, ticket.blob))
        if info.ticket.global_id != global_id:
            return self._refuse(f"ticket of global_id {info.ticket.global_id} presented by {global_id}")
        if float(info.ticket.expires) and self.clock() >= float(info.ticket.expires):
            return self._refuse(f"the ticket of {info.ticket.name} expired")
        key = info.session_key
        auth = Authorize.decode(unseal_bl(key.secret, d))
        if not isinstance(challenge, int) or not auth.have_challenge:
            # always challenged first: a replayed authorizer cannot answer a challenge made now
            server_challenge = int.from_bytes(self.rng(8), "little")
            self.challenged += 1
            return AuthVerdict(False, seal(key.secret, AuthorizeChallenge(server_challenge).encode()),
                               server_challenge, "challenged")
        if auth.server_challenge_plus_one != (challenge + 1) & _MASK64:
            return self._refuse(f"the authorizer answers challenge {auth.server_challenge_plus_one:#x}, "
                                f"we expect {(challenge + 1) & _MASK64:#x}")
        self.accepted += 1

        def signer_for(features: int, sign_messages: bool) -> MessageSigner | None:
            return SessionSigner.for_session(key.secret, features, sign_messages)

        return AuthVerdict(True, seal_bl(key.secret, AuthorizeReply((auth.nonce + 1) & _MASK64).encode()),
                           None, f"{info.ticket.name} global_id {global_id}", signer_for)
