"""The cephx structures on the wire (request/response bodies inside MAuth/MAuthReply).

Each struct starts with a u8 struct_v (no compat/length envelope); a decoder
refuses version 0, which no Ceph release writes, and reads the fields of the
newest version it knows. Sealed parts are built with :mod:`msgr.auth.crypto`.
"""
from __future__ import annotations

from dataclasses import dataclass

from msgr.auth.keyring import CryptoKey
from msgr.encoding import AuthEntityName, Decoder, Encoder, Utime
from msgr.errors import DecodeError

__all__ = [
    "CEPHX_GET_AUTH_SESSION_KEY", "CEPHX_GET_PRINCIPAL_SESSION_KEY", "CEPHX_GET_ROTATING_KEY",
    "ServerChallenge", "ResponseHeader", "TicketBlob", "Authenticate", "ChallengeBlob",
    "ServiceTicket", "ServiceTicketRequest", "Authorize", "AuthorizeReply", "AuthorizeChallenge",
    "ExpiringKey", "RotatingSecrets", "AuthTicket", "ServiceTicketInfo", "struct_v",
]

CEPHX_GET_AUTH_SESSION_KEY = 0x0100
CEPHX_GET_PRINCIPAL_SESSION_KEY = 0x0200
CEPHX_GET_ROTATING_KEY = 0x0400
REQUEST_NAMES = {CEPHX_GET_AUTH_SESSION_KEY: "GET_AUTH_SESSION_KEY",
                 CEPHX_GET_PRINCIPAL_SESSION_KEY: "GET_PRINCIPAL_SESSION_KEY",
                 CEPHX_GET_ROTATING_KEY: "GET_ROTATING_KEY"}


def struct_v(d: Decoder, what: str) -> int:
    """The leading u8 version of a cephx struct; 0 is refused."""
    v = d.u8()
    if v == 0:
        raise DecodeError(f"{what}: struct_v 0 is not a version Ceph writes")
    return v


@dataclass(frozen=True, slots=True)
class ServerChallenge:
    """The monitor's first answer to a cephx client: a random u64."""

    server_challenge: int

    def encode(self) -> bytes:
        return Encoder().u8(1).u64(self.server_challenge).getvalue()

    @classmethod
    def decode_from(cls, d: Decoder) -> ServerChallenge:
        struct_v(d, "CephXServerChallenge")
        return cls(d.u64())


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    request_type: int
    status: int = 0

    def encode_into(self, e: Encoder) -> Encoder:
        return e.u16(self.request_type).s32(self.status)

    @classmethod
    def decode_from(cls, d: Decoder) -> ResponseHeader:
        return cls(d.u16(), d.s32())


@dataclass(frozen=True, slots=True)
class TicketBlob:
    """A service ticket as the client holds it: opaque ``blob`` sealed by the service's secret."""

    secret_id: int = 0
    blob: bytes = b""

    def encode_into(self, e: Encoder) -> Encoder:
        return e.u8(1).u64(self.secret_id).bytes(self.blob)

    def encode(self) -> bytes:
        return self.encode_into(Encoder()).getvalue()

    @classmethod
    def decode_from(cls, d: Decoder) -> TicketBlob:
        struct_v(d, "CephXTicketBlob")
        return cls(d.u64(), d.bytes())


@dataclass(frozen=True, slots=True)
class ChallengeBlob:
    """What the client seals with its secret to prove it holds it (then folds to a u64)."""

    server_challenge: int
    client_challenge: int

    def encode(self) -> bytes:
        return Encoder().u64(self.server_challenge).u64(self.client_challenge).getvalue()


@dataclass(frozen=True, slots=True)
class Authenticate:
    """CEPHX_GET_AUTH_SESSION_KEY body (v3): challenge, proof, old ticket, other keys wanted."""

    client_challenge: int
    key: int
    old_ticket: TicketBlob = TicketBlob()
    other_keys: int = 0
    version: int = 3

    def encode_into(self, e: Encoder) -> Encoder:
        e.u8(self.version).u64(self.client_challenge).u64(self.key)
        self.old_ticket.encode_into(e)
        if self.version >= 2:
            e.u32(self.other_keys)
        return e

    @classmethod
    def decode_from(cls, d: Decoder) -> Authenticate:
        v = struct_v(d, "CephXAuthenticate")
        cc, key = d.u64(), d.u64()
        old = TicketBlob.decode_from(d)
        other = d.u32() if v >= 2 else 0
        return cls(cc, key, old, other, v)


@dataclass(frozen=True, slots=True)
class ServiceTicket:
    """The part of a ticket reply the client can open: session key and validity."""

    session_key: CryptoKey
    validity: Utime

    def encode(self) -> bytes:
        e = Encoder().u8(1)
        self.session_key.encode_into(e)
        return e.utime(self.validity).getvalue()

    @classmethod
    def decode(cls, buf: bytes) -> ServiceTicket:
        d = Decoder(buf, what="CephXServiceTicket")
        struct_v(d, "CephXServiceTicket")
        return cls(CryptoKey.decode_from(d), d.utime())


@dataclass(frozen=True, slots=True)
class ServiceTicketRequest:
    """CEPHX_GET_PRINCIPAL_SESSION_KEY's tail: the entity-type bitmask of tickets wanted."""

    keys: int

    def encode_into(self, e: Encoder) -> Encoder:
        return e.u8(1).u32(self.keys)

    @classmethod
    def decode_from(cls, d: Decoder) -> ServiceTicketRequest:
        struct_v(d, "CephXServiceTicketRequest")
        return cls(d.u32())


@dataclass(frozen=True, slots=True)
class Authorize:
    """The sealed part of an authorizer (v2): nonce and the answer to a server challenge."""

    nonce: int
    have_challenge: bool = False
    server_challenge_plus_one: int = 0

    def encode(self) -> bytes:
        return (Encoder().u8(2).u64(self.nonce).bool(self.have_challenge)
                .u64(self.server_challenge_plus_one).getvalue())

    @classmethod
    def decode(cls, buf: bytes) -> Authorize:
        d = Decoder(buf, what="CephXAuthorize")
        v = struct_v(d, "CephXAuthorize")
        nonce = d.u64()
        if v >= 2:
            return cls(nonce, d.bool(), d.u64())
        return cls(nonce)


@dataclass(frozen=True, slots=True)
class AuthorizeReply:
    """The service's sealed answer to an authorizer: nonce + 1 (v2: a connection secret)."""

    nonce_plus_one: int
    connection_secret: bytes = b""

    def encode(self) -> bytes:
        e = Encoder().u8(2 if self.connection_secret else 1).u64(self.nonce_plus_one)
        if self.connection_secret:
            e.bytes(self.connection_secret)
        return e.getvalue()

    @classmethod
    def decode(cls, buf: bytes) -> AuthorizeReply:
        d = Decoder(buf, what="CephXAuthorizeReply")
        v = struct_v(d, "CephXAuthorizeReply")
        n = d.u64()
        return cls(n, d.bytes() if v >= 2 else b"")


@dataclass(frozen=True, slots=True)
class AuthorizeChallenge:
    """A service's challenge to an authorizer (sealed with the ticket's session key)."""

    server_challenge: int

    def encode(self) -> bytes:
        return Encoder().u8(1).u64(self.server_challenge).getvalue()

    @classmethod
    def decode(cls, buf: bytes) -> AuthorizeChallenge:
        d = Decoder(buf, what="CephXAuthorizeChallenge")
        struct_v(d, "CephXAuthorizeChallenge")
        return cls(d.u64())


@dataclass(frozen=True, slots=True)
class ExpiringKey:
    """One rotating service secret: the key and when it stops being used."""

    key: CryptoKey
    expiration: Utime

    def encode_into(self, e: Encoder) -> Encoder:
        e.u8(1)
        self.key.encode_into(e)
        return e.utime(self.expiration)

    @classmethod
    def decode_from(cls, d: Decoder) -> ExpiringKey:
        struct_v(d, "ExpiringCryptoKey")
        return cls(CryptoKey.decode_from(d), d.utime())


@dataclass(frozen=True, slots=True)
class RotatingSecrets:
    """A service type's rotating secrets by secret_id (CEPHX_GET_ROTATING_KEY's answer)."""

    secrets: dict[int, ExpiringKey]
    max_ver: int

    def encode(self) -> bytes:
        e = Encoder().u8(1).u32(len(self.secrets))
        for sid in sorted(self.secrets):
            self.secrets[sid].encode_into(e.u64(sid))
        return e.u64(self.max_ver).getvalue()

    @classmethod
    def decode(cls, buf: bytes) -> RotatingSecrets:
        d = Decoder(buf, what="RotatingSecrets")
        struct_v(d, "RotatingSecrets")
        n = d.length(8 + 1 + 28 + 8, "rotating secrets")   # u64 id + the smallest key
        out = {}
        for _ in range(n):
            sid = d.u64()
            out[sid] = ExpiringKey.decode_from(d)
        return cls(out, d.u64())


@dataclass(frozen=True, slots=True)
class AuthTicket:
    """What a service learns from a ticket: who (name, global_id), its validity and caps."""

    name: AuthEntityName
    global_id: int
    created: Utime
    expires: Utime
    caps: bytes = b""
    allow_all: bool = False
    flags: int = 0

    def encode_into(self, e: Encoder) -> Encoder:
        e.u8(2).auth_entity_name(self.name).u64(self.global_id).u64(0xFFFFFFFFFFFFFFFF)  # old auid
        e.utime(self.created).utime(self.expires)
        e.u8(1).bool(self.allow_all).bytes(self.caps)   # AuthCapsInfo
        return e.u32(self.flags)

    @classmethod
    def decode_from(cls, d: Decoder) -> AuthTicket:
        v = struct_v(d, "AuthTicket")
        name = d.auth_entity_name()
        gid = d.u64()
        if v >= 2:
            d.u64()   # the auid Ceph no longer uses
        created, expires = d.utime(), d.utime()
        struct_v(d, "AuthCapsInfo")
        allow_all = d.bool()
        caps = d.bytes()
        return cls(name, gid, created, expires, caps, allow_all, d.u32())


@dataclass(frozen=True, slots=True)
class ServiceTicketInfo:
    """The inside of a ticket blob, sealed with the service's rotating secret: ticket + session key."""

    ticket: AuthTicket
    session_key: CryptoKey

    def encode(self) -> bytes:
        e = Encoder().u8(1)
        self.ticket.encode_into(e)
        return self.session_key.encode_into(e).getvalue()

    @classmethod
    def decode(cls, buf: bytes) -> ServiceTicketInfo:
        d = Decoder(buf, what="CephXServiceTicketInfo")
        struct_v(d, "CephXServiceTicketInfo")
        return cls(AuthTicket.decode_from(d), CryptoKey.decode_from(d))
