"""Typed errors of pymsgr, all rooted at :class:`MsgrError`.

Codec errors (:class:`DecodeError` and subclasses) come from parsing bytes.
Protocol errors say which side broke the protocol: internals raise
:class:`LocalProtocolError`; the protocol machine converts errors caused by
the peer's bytes into :class:`RemoteProtocolError` in one place.
"""
from __future__ import annotations


class MsgrError(Exception):
    """Root of every error pymsgr raises on purpose."""


# --- codec ---------------------------------------------------------------

class DecodeError(MsgrError):
    """Bytes that cannot be decoded into the structure asked for."""


class ShortBufferError(DecodeError):
    """Fewer bytes than the structure needs."""

    def __init__(self, what: str, need: int, have: int) -> None:
        super().__init__(f"{what}: need {need} bytes, have {have}")
        self.what = what
        self.need = need
        self.have = have


class BadCrcError(DecodeError):
    """A CRC-32C check failed."""

    def __init__(self, what: str, expected: int, actual: int) -> None:
        super().__init__(f"{what}: bad crc, wire says {expected:#010x}, computed {actual:#010x}")
        self.what = what
        self.expected = expected
        self.actual = actual


class PayloadDecodeError(DecodeError):
    """A message's ``decode_payload`` failed; any exception it raised is chained as ``__cause__``."""

    def __init__(self, msg_type: int, class_name: str, cause: BaseException) -> None:
        detail = str(cause) if isinstance(cause, DecodeError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{class_name} (type {msg_type:#x}): bad payload: {detail}")
        self.msg_type = msg_type
        self.class_name = class_name


class BadBannerError(DecodeError):
    """The peer's banner is not ``ceph v027``: it is not a Ceph msgr v1 peer.

    ``got`` holds the first bytes that arrived (up to 16), e.g. ``b'SSH-2.0-OpenSSH_'`` or
    ``b'GET / HTTP/1.1'``, for a caller that wants to say what answered instead.
    """

    def __init__(self, message: str, got: bytes = b"") -> None:
        super().__init__(message)
        self.got = got


class BadAddressError(DecodeError):
    """An entity address with an unknown family, marker or impossible length."""


class WrongNodeError(BadAddressError):
    """The peer at the address we dialled is another process ("wrong node", as Ceph says): its
    identify names another address or nonce, e.g. the peer restarted. A lossless session keeps
    retrying (the application or a map update must mark it down); ``expected``/``got`` are the
    addresses (EntityAddr)."""

    def __init__(self, message: str, expected: object, got: object) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class BadLengthError(DecodeError):
    """A length field that is impossible or above the configured maximum."""


class BadTagError(DecodeError):
    """A tag byte that is not valid in the current state."""


# --- protocol ------------------------------------------------------------

class ProtocolError(MsgrError):
    """The v1 protocol was broken (by us or by the peer)."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


# --- configuration and threading ------------------------------------------

class ConfigError(MsgrError, ValueError):
    """An unknown option name or an invalid option value."""


# The event engine's own error (eventcenter is below msgr and cannot import it); re-exported here so
# that msgr users find every error pymsgr raises in one module.
from eventcenter.errors import CenterClosedError, WrongThreadError  # noqa: E402,F401


class WouldDeadlockError(MsgrError, WrongThreadError):
    """A blocking call (``Connection.flush``, ``shutdown(linger=...)``) made on a messenger thread
    (a worker, or the dispatch thread that runs Dispatcher callbacks): it would wait for work that
    only that very thread can do."""


# --- request/reply (msgr.rpc) ------------------------------------------------

class RequestFailed(MsgrError):
    """A request sent through :class:`msgr.rpc.Requests` will get no reply.

    ``request`` is the message sent, ``connection`` the connection it was sent on.
    """

    def __init__(self, message: str, request: object = None, connection: object = None) -> None:
        super().__init__(message)
        self.request = request
        self.connection = connection


class RequestTimeout(RequestFailed, TimeoutError):
    """No reply came within the request's timeout."""


class ConnectionReset(RequestFailed):
    """The connection failed (``ms_handle_reset``: a lossy session ended) before the reply came."""


class RemoteReset(RequestFailed):
    """The peer reset the session (``ms_handle_remote_reset``: it restarted or forgot us)."""


class RequestDiscarded(RequestFailed):
    """The request itself was never sent: its session was closed or reset while it was queued."""


class RequestAborted(RequestFailed):
    """The helper was closed (or its messenger shut down) while the request was waiting."""


class DispatcherClosed(MsgrError):
    """:class:`msgr.aio.AsyncDispatcher` was closed: no more messages will come from it."""
