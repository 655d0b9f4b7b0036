"""cephx authentication: keys and keyrings, Ceph's AES envelope, tickets, the client exchange.

Modules: :mod:`.keyring` (CryptoKey, Keyring), :mod:`.crypto` (AES-128-CBC with
Ceph's IV and padding, the sealed envelope), :mod:`.cephx_wire` (the structs
inside MAuth/MAuthReply), :mod:`.tickets` (service tickets, authorizers),
:mod:`.cephx_client` (the client exchange with a monitor), :mod:`.errors`.
docs/CEPHX.md describes the protocol as observed with Ceph 16.
"""
from msgr.auth.cephx_client import CephxClient
from msgr.auth.errors import (
    AuthError,
    AuthRefusedError,
    BadKeyError,
    KeyringError,
    NoTicketError,
    PermissionDeniedError,
    TicketExpiredError,
    UnsupportedAuthError,
)
from msgr.auth.keyring import CryptoKey, Keyring, parse_entity_name

__all__ = [
    "CephxClient", "CryptoKey", "Keyring", "parse_entity_name", "AuthError", "AuthRefusedError",
    "BadKeyError", "KeyringError", "NoTicketError", "PermissionDeniedError", "TicketExpiredError",
    "UnsupportedAuthError",
]
