"""What a sans-IO ProtocolV1 asks its owner to do.

Every entry point of :class:`~msgr.protocol.protocol_v1.ProtocolV1` returns
a list of these. Bytes to write are not actions: the owner pulls them with
``take_output()`` after handling the actions (so handshake bytes, messages
and acks leave in one ordered stream, many frames per ``sendmsg``).

The owner is ``msgr.connection.AsyncConnection`` (sockets on a worker) or
the simulator in ``msgr.sim`` (no sockets, virtual clock).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgr.entity import EntityAddr

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message


class TimerKind(enum.Enum):
    RECONNECT = "reconnect"            # backoff expired: start connecting again
    THROTTLE_RETRY = "throttle_retry"  # a receive throttle was full: try again
    IDLE = "idle"                      # ms_connection_idle_timeout
    INJECT_DELAY = "inject_delay"      # ms_inject_delay_*: a delayed delivery is due
    CONNECTION_READY = "connection_ready"  # ms_connection_ready_timeout: the attempt is not OPEN yet

    # identity hash (Enum's own hashes the name in Python): a connection keys its timers by kind
    __hash__ = object.__hash__


class ConnEvent(enum.Enum):
    """Dispatcher notifications, as DispatchQueue's D_* codes."""

    CONNECT = "D_CONNECT"                  # ms_handle_connect
    ACCEPT = "D_ACCEPT"                    # ms_handle_accept
    BAD_REMOTE_RESET = "D_BAD_REMOTE_RESET"  # ms_handle_remote_reset
    BAD_RESET = "D_BAD_RESET"              # ms_handle_reset
    CONN_REFUSED = "D_CONN_REFUSED"        # ms_handle_refused


@dataclass(slots=True, frozen=True)
class OpenSocket:
    """Start a non-blocking TCP connect to ``addr``; report ``on_connected`` / ``on_socket_error``."""
    addr: EntityAddr


@dataclass(slots=True, frozen=True)
class CloseSocket:
    """Close the current socket now (pending output is dropped)."""
    reason: str


@dataclass(slots=True, frozen=True)
class ArmTimer:
    """Call ``on_timer(kind)`` after ``delay_us``; one timer per kind, re-arming replaces it."""
    kind: TimerKind
    delay_us: int


@dataclass(slots=True, frozen=True)
class CancelTimer:
    kind: TimerKind


class Deliver(list["Message"]):
    """Complete, checked messages for the dispatchers, in arrival order (fast or queued: the
    owner decides). One action carries every message one receive call decoded: no action object
    per message. The action is the list of its messages (``msgs`` is the list itself): it is built
    on every read, and a list subclass is made and filled without a Python-level ``__init__``."""

    __slots__ = ()

    @property
    def msgs(self) -> list[Message]:
        return self

    def __repr__(self) -> str:
        return f"Deliver({list.__repr__(self)})"


@dataclass(slots=True, frozen=True)
class Notify:
    """Tell the dispatchers about the connection (connect, accept, resets, refused)."""
    event: ConnEvent


@dataclass(slots=True, frozen=True)
class Fault:
    """Informational: why the connection faulted (for logs and counters); the state change is done.

    ``notable``: worth a WARNING line (bad bytes from the peer, a wrong node), set only the first
    time this cause faults this session, so a retry loop logs its cause once, not per retry."""
    reason: str
    error: Exception | None = None
    notable: bool = False


@dataclass(slots=True, frozen=True)
class Discarded:
    """Messages a session reset dropped unsent: reported to the application, never silent."""
    messages: tuple[Message, ...]


@dataclass(slots=True, frozen=True)
class ReplaceExisting:
    """Server side: hand this (accepting) socket to the session ``existing`` and forget it.

    The owner must detach the socket from this connection and, on the
    existing connection's own thread, call ``existing.adopt_socket(...)``.
    ``reset_session`` is set when the peer restarted (connect_seq 0).
    """
    existing: Any  # ProtocolV1
    reset_session: bool = False


@dataclass(slots=True, frozen=True)
class PokeExisting:
    """Server side, lost race (WAIT): make ``existing`` send a keepalive so its connect completes."""
    existing: Any  # ProtocolV1


@dataclass(slots=True, frozen=True)
class StopExisting:
    """Server side, lossy replace: close ``existing`` (its dispatchers get a reset)."""
    existing: Any  # ProtocolV1


@dataclass(slots=True, frozen=True)
class Registered:
    """The session is now known by the peer's address (``peer_addr`` is final)."""
    peer_addr: EntityAddr


@dataclass(slots=True, frozen=True)
class SessionClosed:
    """The session ended (CLOSED): unregister it, release its resources."""
    reason: str


Action = (OpenSocket | CloseSocket | ArmTimer | CancelTimer | Deliver | Notify | Fault | Discarded
          | ReplaceExisting | PokeExisting | StopExisting | Registered | SessionClosed)
