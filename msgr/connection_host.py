"""The interface between connections and their messenger, in both directions.

As :class:`~msgr.protocol.host.ProtocolHost` is what a protocol machine may ask of
its messenger, these are what a connection (the owner of one machine, its socket
and its timers) and the messenger may ask of each other, and what one session may
ask of another of the same messenger (replace, race, lossy stop). No module uses
another's private names outside the interfaces declared here: ``MessengerHost``
(the messenger's internal host, in msgr/messenger.py) and ``AsyncConnection``
implement these and the simulator (``msgr.sim``) implements the same.

The members of :class:`SessionControl` and :class:`MessengerConnection` carry a
leading underscore: the object that implements them is also the application's
``Connection``, whose public surface is only what docs/USER_GUIDE.md documents.
They are an interface between these modules all the same, declared here, and
nothing else calls them.

Threads (see docs/ARCHITECTURE.md, "Who owns what"): a connection's protocol
machine is changed only on the connection's worker or by a holder of
``_session_lock``; every :class:`SessionControl` call returns at once and does its
work on the session's own worker.
"""
from __future__ import annotations

from contextlib import AbstractContextManager as ContextManager
from typing import TYPE_CHECKING, Any, Protocol

from msgr.protocol.host import ProtocolHost

if TYPE_CHECKING:  # pragma: no cover
    from msgr.entity import EntityAddr
    from msgr.protocol.protocol_v1 import ProtocolV1


class ConnectionHost(ProtocolHost, Protocol):
    """What a connection asks of its messenger, besides what its protocol asks (ProtocolHost)."""

    def connection_registered(self, conn: Any) -> None:
        """``conn``'s session is now known by its peer's address (a hook: the map was updated)."""

    def connection_marked_down(self, conn: Any) -> None:
        """``conn`` was marked down: ``connect_to`` must not hand it out any more."""

    def connection_closed(self, conn: Any) -> None:
        """``conn`` released everything it held: the messenger forgets it."""

    def note_dropped_unsent(self, count: int) -> None:
        """mark_down/shutdown dropped ``count`` messages never handed to the protocol (counted, logged once)."""


class SessionControl(Protocol):
    """What a connection asks of another session of its messenger.

    Every call returns at once; the work runs on that session's own worker (as the
    cross-worker steps of Ceph's replace), so it never races the session's own calls.
    """

    _proto: ProtocolV1

    def _hand_over(self, handle: Any, reset_session: bool) -> None:
        """Lossless replace: adopt the accepted socket ``handle`` (the transport's own kind)."""

    def _poke(self) -> None:
        """Lost race (WAIT): send a keepalive so this session's own connect completes."""

    def _stop_replaced(self, reason: str) -> None:
        """Lossy replace: this session faults (and, being lossy, closes with a reset callback)."""


class MessengerConnection(SessionControl, Protocol):
    """What the messenger (and its admin socket) asks of one of its connections, besides the
    public :class:`~msgr.connection_base.Connection` methods (``mark_down``, ``flush_future``)."""

    _closed: bool   # the session is over and the connection released everything
    _target: EntityAddr | None   # the address connect_to was given (None: an accepted session)

    def _is_down(self) -> bool:
        """Marked down (by the user or the messenger): never handed out again."""

    def _begin_connect(self) -> None:
        """Start the protocol toward the target now (before the session is published)."""

    def _start_accept(self, sock: Any, peer_sockaddr: tuple[Any, ...], local: EntityAddr | None = None,
                      tuned: bool = False) -> None:
        """On the connection's worker: serve the accepted socket ``sock`` (``peer_sockaddr``: the
        peer's address as ``accept()`` returned it; ``local``: the socket's own address when the
        listener knows it, else asked with getsockname)."""

    def _abandon(self) -> None:
        """On the connection's worker (the messenger's wait): end whatever is left, silently."""

    def _orphan(self) -> None:
        """The worker is gone: close the socket and mark the connection closed, from any thread."""

    def _session_lock(self) -> ContextManager[Any]:
        """Held by the connection's worker around every protocol call; a foreign reader/changer of
        this session (an accept deciding on it) holds it too."""

    def _status(self) -> dict[str, Any]:
        """A snapshot for the admin socket's ``dump_connections`` (any thread; not atomic)."""
