"""The monitor's side of cephx over MAuth (sans-IO): what a pymsgr monitor answers a cephx client.

:class:`CephxMonServer` holds the entities' secrets (a :class:`~msgr.auth.keyring.Keyring`)
and rotating secrets it makes itself for AUTH, MON, OSD, MGR and MDS; :meth:`new_session`
gives one :class:`CephxMonSession` per client connection. The session answers, in the layout
docs/CEPHX.md records from a real ceph-mon 16:

* the negotiation: a server challenge (u8 1, u64 random);
* ``CEPHX_GET_AUTH_SESSION_KEY``: checks the proof (:func:`fold_challenge` of our copy of the
  entity's secret), then the AUTH ticket sealed with that secret, an empty connection secret
  (msgr2's) and the other tickets asked for, sealed with the new session key; a wrong proof or an
  unknown entity is -EACCES (they are the same on the wire, as with Ceph);
* ``CEPHX_GET_PRINCIPAL_SESSION_KEY``: an authorizer from the AUTH ticket, then the tickets asked
  for, sealed with the AUTH session key;
* ``CEPHX_GET_ROTATING_KEY`` (a daemon entity): its service type's rotating secrets, sealed with
  its own secret.

Every time is passed in (``now``, seconds); randomness comes from ``rng``.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable

from msgr.auth.cephx_client import fold_challenge
from msgr.auth.cephx_wire import (
    CEPHX_GET_AUTH_SESSION_KEY,
    CEPHX_GET_PRINCIPAL_SESSION_KEY,
    CEPHX_GET_ROTATING_KEY,
    Authenticate,
    Authorize,
    AuthTicket,
    ExpiringKey,
    ResponseHeader,
    RotatingSecrets,
    ServerChallenge,
    ServiceTicket,
    ServiceTicketInfo,
    ServiceTicketRequest,
    TicketBlob,
    struct_v,
)
from msgr.auth.crypto import seal, seal_bl, unseal, unseal_bl
from msgr.auth.errors import AuthError, KeyringError
from msgr.auth.keyring import CryptoKey, Keyring
from msgr.encoding import AuthEntityName, Decoder, Encoder, Utime
from msgr.entity import EntityName
from msgr.errors import DecodeError

__all__ = ["CephxMonServer", "CephxMonSession"]

AUTH = EntityName.TYPE_AUTH
SERVICES = (EntityName.TYPE_MON, EntityName.TYPE_OSD, EntityName.TYPE_MGR, EntityName.TYPE_MDS)
_SERVICE_NAMES = {EntityName.TYPE_MON: "mon", EntityName.TYPE_OSD: "osd", EntityName.TYPE_MGR: "mgr",
                  EntityName.TYPE_MDS: "mds"}
AUTH_TICKET_TTL = 72 * 3600      # auth_mon_ticket_ttl (observed on ceph-mon 16)
SERVICE_TICKET_TTL = 3600        # auth_service_ticket_ttl (observed)
SECRET_ID = 1


def _utime(t: float) -> Utime:
    return Utime(int(t), int((t % 1) * 1e9))


class CephxMonServer:
    """Secrets of one pymsgr monitor: the keyring's entities and its own rotating secrets."""

    def __init__(self, keyring: Keyring, now: float,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.keyring = keyring
        self.rng = rng
        self.rotating: dict[int, RotatingSecrets] = {}
        for service in (AUTH, *SERVICES):
            key = CryptoKey(rng(16), created=_utime(now))
            self.rotating[service] = RotatingSecrets(
                {SECRET_ID: ExpiringKey(key, _utime(now + 2 * AUTH_TICKET_TTL))}, SECRET_ID)

    def service_secret(self, service_id: int) -> tuple[int, CryptoKey]:
        rs = self.rotating[service_id]
        return rs.max_ver, rs.secrets[rs.max_ver].key

    def new_session(self) -> CephxMonSession:
        return CephxMonSession(self)


class CephxMonSession:
    """One client connection's cephx state on the monitor side."""

    def __init__(self, server: CephxMonServer) -> None:
        self.server = server
        self.name = AuthEntityName()
        self.global_id = 0
        self.server_challenge = 0
        self.auth_session_key: CryptoKey | None = None
        self.authenticated = False

    def start(self, name: AuthEntityName, global_id: int) -> bytes:
        """The answer to the negotiation: the server challenge (for any name, as Ceph)."""
        self.name, self.global_id = name, global_id
        self.server_challenge = int.from_bytes(self.server.rng(8), "little")
        return ServerChallenge(self.server_challenge).encode()

    def handle(self, payload: bytes, now: float) -> tuple[int, bytes]:
        """(result, reply payload) for one protocol-CEPHX MAuth; bad bytes are -EINVAL."""
        try:
            d = Decoder(payload, what="cephx request")
            req = d.u16()
            if req == CEPHX_GET_AUTH_SESSION_KEY:
                return self._session_key(Authenticate.decode_from(d), now)
            if req == CEPHX_GET_PRINCIPAL_SESSION_KEY:
                return self._service_tickets(d, now)
            if req == CEPHX_GET_ROTATING_KEY:
                return self._rotating()
            return -errno.EINVAL, b""
        except (DecodeError, AuthError):
            return -errno.EINVAL, b""

    # --- requests -------------------------------------------------------------------------
    def _secret(self) -> CryptoKey | None:
        try:
            return self.server.keyring.get_key(self.name)
        except KeyringError:
            return None

    def _session_key(self, a: Authenticate, now: float) -> tuple[int, bytes]:
        secret = self._secret()
        if secret is None or a.key != fold_challenge(secret, self.server_challenge, a.client_challenge):
            return -errno.EACCES, b""
        key = self.auth_session_key = self._new_key(now)
        e = ResponseHeader(CEPHX_GET_AUTH_SESSION_KEY).encode_into(Encoder())
        self._ticket_reply(e, secret, [(AUTH, key, AUTH_TICKET_TTL)], now)
        wanted = [s for s in SERVICES if a.other_keys & s]
        extra = Encoder()
        if wanted:
            self._ticket_reply(extra, key, [(s, self._new_key(now), SERVICE_TICKET_TTL) for s in wanted], now)
        e.bytes(b"").bytes(extra.getvalue())   # connection secret (msgr2 only), the other tickets
        self.authenticated = True
        return 0, e.getvalue()

    def _service_tickets(self, d: Decoder, now: float) -> tuple[int, bytes]:
        struct_v(d, "CephXAuthorizer")
        gid, service = d.u64(), d.u32()
        blob = TicketBlob.decode_from(d)
        sid, auth_secret = self.server.service_secret(AUTH)
        if service != AUTH or blob.secret_id != sid or gid != self.global_id:
            return -errno.EPERM, b""
        info = ServiceTicketInfo.decode(unseal(auth_secret.secret, blob.blob))
        Authorize.decode(unseal_bl(info.session_key.secret, d))   # proves the session key
        want = ServiceTicketRequest.decode_from(d).keys
        e = ResponseHeader(CEPHX_GET_PRINCIPAL_SESSION_KEY).encode_into(Encoder())
        self._ticket_reply(e, info.session_key,
                           [(s, self._new_key(now), SERVICE_TICKET_TTL) for s in SERVICES if want & s], now)
        return 0, e.getvalue()

    def _rotating(self) -> tuple[int, bytes]:
        secret = self._secret()
        if not self.authenticated or secret is None or self.name.type not in self.server.rotating \
                or self.name.type == AUTH:
            return -errno.EACCES, b""
        e = ResponseHeader(CEPHX_GET_ROTATING_KEY).encode_into(Encoder())
        return 0, e.raw(seal_bl(secret.secret, self.server.rotating[self.name.type].encode())).getvalue()

    # --- building tickets ---------------------------------------------------------------------
    def _new_key(self, now: float) -> CryptoKey:
        return CryptoKey(self.server.rng(16), created=_utime(now))

    def _ticket_reply(self, e: Encoder, principal: CryptoKey, tickets: list[tuple[int, CryptoKey, int]],
                      now: float) -> None:
        """u8 1, u32 count, per ticket: service, the sealed (session key, validity), and the blob
        sealed with the service's rotating secret (opaque to the client)."""
        e.u8(1).u32(len(tickets))
        entry = self.server.keyring.entries.get(f"{EntityName.type_name(self.name.type)}.{self.name.id}")
        for service, key, ttl in tickets:
            caps = entry.caps.get(_SERVICE_NAMES.get(service, ""), "") if entry is not None else ""
            ticket = AuthTicket(self.name, self.global_id, _utime(now), _utime(now + ttl),
                                Encoder().string(caps).getvalue())
            sid, service_secret = self.server.service_secret(service)
            blob = TicketBlob(sid, seal(service_secret.secret, ServiceTicketInfo(ticket, key).encode()))
            e.u32(service).u8(1).raw(seal_bl(principal.secret, ServiceTicket(key, Utime(ttl, 0)).encode()))
            e.u8(0).bytes(blob.encode())
