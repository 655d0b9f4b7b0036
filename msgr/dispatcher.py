"""The Dispatcher base: what an application overrides to receive messages.

Every callback has a "not handled" default, so a subclass overrides only
what it needs. Messages reach dispatchers in the order they were added
(``add_dispatcher_head`` puts one first); the first that handles a message
stops the walk, as in Ceph.

A connection event goes through the dispatch thread only when some dispatcher
overrides its callback: nobody would hear it otherwise, and waking that thread
for nothing costs a GIL hand-off. ``ms_handle_fast_connect`` and
``ms_handle_fast_accept`` (Ceph's names) run on the connection's worker instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection
    from msgr.message import Message


class Dispatcher:
    """Override the ``ms_*`` callbacks you need; the defaults decline everything."""

    # --- messages ----------------------------------------------------------
    def ms_can_fast_dispatch_any(self) -> bool:
        """True if this dispatcher may ever fast-dispatch (Ceph's shortcut check)."""
        return type(self).ms_can_fast_dispatch is not Dispatcher.ms_can_fast_dispatch

    def ms_can_fast_dispatch(self, msg: Message) -> bool:
        """True to take ``msg`` on the worker thread via :meth:`ms_fast_dispatch`."""
        return False

    def ms_fast_dispatch(self, msg: Message) -> None:
        """Handle ``msg`` on the connection's worker thread (keep it short, never block)."""

    def ms_fast_preprocess(self, msg: Message) -> None:
        """Called on the worker for every message before it is queued or fast-dispatched."""

    def ms_dispatch(self, msg: Message) -> bool:
        """Handle ``msg`` on the dispatch thread; True = handled."""
        return False

    # --- connection events ---------------------------------------------------
    def ms_handle_connect(self, conn: Connection) -> None:
        """An outgoing connection (re)connected."""

    def ms_handle_accept(self, conn: Connection) -> None:
        """An incoming connection was accepted (also after a lossless reconnect)."""

    def ms_handle_fast_connect(self, conn: Connection) -> None:
        """As :meth:`ms_handle_connect`, but on the connection's worker thread, at once: before
        ``ms_handle_connect`` is queued and before any message of the session is dispatched (keep
        it short, never block)."""

    def ms_handle_fast_accept(self, conn: Connection) -> None:
        """As :meth:`ms_handle_accept`, but on the connection's worker thread, at once: before
        ``ms_handle_accept`` is queued and before any message of the session is dispatched (keep it
        short, never block)."""

    def ms_handle_reset(self, conn: Connection) -> bool:
        """A lossy connection failed or was closed by a fault; True = handled."""
        return False

    def ms_handle_remote_reset(self, conn: Connection) -> None:
        """The peer reset the session (it restarted or forgot us)."""

    def ms_handle_refused(self, conn: Connection) -> bool:
        """Connecting was refused (ECONNREFUSED); True = handled."""
        return False

    def ms_handle_discarded(self, conn: Connection, messages: tuple[Message, ...]) -> None:
        """pymsgr: queued messages a session reset dropped unsent (reported, never silent)."""


# the callbacks of the events the DispatchQueue delivers (Ceph's D_CONNECT ... D_CONN_REFUSED, and
# pymsgr's discarded messages)
QUEUED_EVENT_CALLBACKS = ("ms_handle_connect", "ms_handle_accept", "ms_handle_reset",
                          "ms_handle_remote_reset", "ms_handle_refused", "ms_handle_discarded")


_CLASS_HEARS: dict[type, frozenset[str]] = {}   # dispatcher class -> QUEUED_EVENT_CALLBACKS it overrides


def _class_hears(cls: type) -> frozenset[str]:
    heard = _CLASS_HEARS.get(cls)
    if heard is None:
        heard = _CLASS_HEARS[cls] = frozenset(
            name for name in QUEUED_EVENT_CALLBACKS if getattr(cls, name) is not getattr(Dispatcher, name))
    return heard


class DispatcherChain:
    """The messenger's ordered dispatchers and the walks over them (Ceph's ``ms_deliver_*``).

    Readers take a snapshot tuple, so adding a dispatcher from another thread
    never disturbs a walk in progress.
    """

    def __init__(self) -> None:
        self._all: tuple[Dispatcher, ...] = ()
        # plain attributes, not properties: the connection's inlined walk reads them per read
        #: Those that may take a message fast (a snapshot).
        self.fast_dispatchers: tuple[Dispatcher, ...] = ()
        #: Those overriding ms_fast_preprocess (usually none).
        self.preprocessors: tuple[Dispatcher, ...] = ()
        #: The usual chain's one fast dispatcher (exactly one, no preprocessor), else None.
        self.sole_fast: Dispatcher | None = None

    def add_head(self, d: Dispatcher) -> None:
        self._set((d,) + self._all)

    def add_tail(self, d: Dispatcher) -> None:
        self._set(self._all + (d,))

    def _set(self, chain: tuple[Dispatcher, ...]) -> None:
        fast = tuple(d for d in chain if d.ms_can_fast_dispatch_any())
        pre = tuple(d for d in chain if type(d).ms_fast_preprocess is not Dispatcher.ms_fast_preprocess)
        self.fast_dispatchers, self.preprocessors = fast, pre
        self.sole_fast = fast[0] if len(fast) == 1 and not pre else None
        self._all = chain

    def __len__(self) -> int:
        return len(self._all)

    @property
    def dispatchers(self) -> tuple[Dispatcher, ...]:
        return self._all

    # --- messages ----------------------------------------------------------
    def fast_dispatcher_for(self, msg: Message) -> Dispatcher | None:
        """The first dispatcher that wants ``msg`` fast, or None (the usual, cheap case)."""
        for d in self.fast_dispatchers:
            if d.ms_can_fast_dispatch(msg):
                return d
        return None

    def fast_preprocess(self, msg: Message) -> None:
        for d in self.preprocessors:
            d.ms_fast_preprocess(msg)

    def deliver(self, msg: Message) -> bool:
        """ms_dispatch down the chain until one handles it; False if none did."""
        for d in self._all:
            if d.ms_dispatch(msg):
                return True
        return False

    # --- connection events -------------------------------------------------
    def hears(self, callback: str) -> bool:
        """Whether some dispatcher overrides ``callback`` (one of QUEUED_EVENT_CALLBACKS), in its
        class or on the instance, now: an event nobody hears is not queued (asked once per event)."""
        for d in self._all:
            if callback in _class_hears(type(d)) or callback in getattr(d, "__dict__", ()):
                return True
        return False

    def handle_fast_connect(self, conn: Connection) -> None:
        for d in self._all:
            d.ms_handle_fast_connect(conn)

    def handle_fast_accept(self, conn: Connection) -> None:
        for d in self._all:
            d.ms_handle_fast_accept(conn)

    def handle_connect(self, conn: Connection) -> None:
        for d in self._all:
            d.ms_handle_connect(conn)

    def handle_accept(self, conn: Connection) -> None:
        for d in self._all:
            d.ms_handle_accept(conn)

    def handle_reset(self, conn: Connection) -> None:
        for d in self._all:
            if d.ms_handle_reset(conn):
                return

    def handle_remote_reset(self, conn: Connection) -> None:
        for d in self._all:
            d.ms_handle_remote_reset(conn)

    def handle_refused(self, conn: Connection) -> None:
        for d in self._all:
            if d.ms_handle_refused(conn):
                return

    def handle_discarded(self, conn: Connection, messages: tuple[Message, ...]) -> None:
        for d in self._all:
            d.ms_handle_discarded(conn, messages)
