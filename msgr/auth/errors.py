"""Typed errors of cephx authentication, all :class:`~msgr.errors.MsgrError` subclasses."""
from __future__ import annotations

import errno
import os

from msgr.errors import DecodeError, MsgrError


class AuthError(MsgrError):
    """Authentication failed or could not be attempted."""


class KeyringError(AuthError):
    """A keyring file or key that cannot be read, or that lacks the entity asked for."""


class BadKeyError(AuthError):
    """A key that does not open what the peer sealed: decryption or the magic check failed.

    On the client this is the "wrong key" case: the monitor's ticket reply is
    sealed with the entity's secret as the monitor knows it.
    """


class CryptoDecodeError(DecodeError, AuthError):
    """A sealed blob whose length, padding or envelope is malformed."""


class BadSignatureError(DecodeError, AuthError):
    """A message whose footer signature is not the one its session key gives (or is missing)."""


class BadAuthorizerReplyError(DecodeError, BadKeyError):
    """A service's authorizer reply that does not prove it opened our ticket."""


class AuthRefusedError(AuthError):
    """The monitor answered an auth request with a negative result (``-errno``)."""

    def __init__(self, result: int, message: str = "", stage: str = "") -> None:
        name = errno.errorcode.get(-result, str(-result)) if result < 0 else str(result)
        text = os.strerror(-result) if result < 0 else "refused"
        where = f" at {stage}" if stage else ""
        super().__init__(f"monitor refused authentication{where}: {result} ({name}: {text})"
                         + (f": {message}" if message else ""))
        self.result = result
        self.stage = stage


class PermissionDeniedError(AuthRefusedError):
    """-EACCES/-EPERM: the monitor rejected our proof of the key (wrong key) or our name."""


class UnsupportedAuthError(AuthRefusedError):
    """-EOPNOTSUPP: no auth method in common (e.g. cephx required, we offered none)."""


class TicketExpiredError(AuthError):
    """A ticket (or the session key it carries) is past its expiry and cannot be used."""


class NoTicketError(AuthError):
    """No ticket for the service asked for (never granted, or no caps for it)."""


def refusal(result: int, message: str = "", stage: str = "") -> AuthRefusedError:
    """The typed error for a monitor's negative auth result."""
    if result in (-errno.EACCES, -errno.EPERM):
        return PermissionDeniedError(result, message, stage)
    if result == -errno.EOPNOTSUPP:
        return UnsupportedAuthError(result, message, stage)
    return AuthRefusedError(result, message, stage)
