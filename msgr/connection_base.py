"""What the application holds (Connection) and our connection to ourselves (LoopbackConnection).

Split from msgr.connection (which re-exports both) to keep that module under the size cap.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from msgr.entity import EntityAddr, EntityName
from msgr.flush import refuse_blocking_call, resolve, wait_flushed

if TYPE_CHECKING:  # pragma: no cover
    from msgr.message import Message
    from msgr.messenger import AsyncMessenger, MessengerHost


_KEEPALIVE_COND_LOCK = threading.Lock()   # makes a connection's keepalive condition once


class Connection:
    """One session with a peer, as the application holds it (``Messenger.connect_to``, callbacks,
    ``Message.get_connection``): the same object for the life of the session.

    Every method may be called from any thread; none blocks on the network except :meth:`flush`.
    """

    _msgr: AsyncMessenger   # the messenger this connection belongs to

    def send_message(self, msg: Message) -> None:  # pragma: no cover - interface
        """Queue ``msg`` for the peer and return at once; the session connects (or reconnects) as
        its policy says. A message that cannot be delivered is reported to
        ``Dispatcher.ms_handle_discarded``, never dropped silently (except after ``mark_down``)."""
        raise NotImplementedError

    def send_keepalive(self) -> None:  # pragma: no cover - interface
        """Send a KEEPALIVE2 (the peer echoes its stamp: :meth:`get_last_keepalive_ack`)."""
        raise NotImplementedError

    def is_connected(self) -> bool:  # pragma: no cover - interface
        """True while the session is open (handshake done, socket up)."""
        raise NotImplementedError

    def get_peer_addr(self) -> EntityAddr | None:  # pragma: no cover - interface
        """The peer's address (None until an accepted peer has announced it)."""
        raise NotImplementedError

    def mark_down(self) -> None:  # pragma: no cover - interface
        """End the session now: the socket closes, queued messages are dropped, no reset callback;
        ``is_connected()`` is False when this returns. A later ``connect_to`` starts a new session."""
        raise NotImplementedError

    def flush_future(self) -> Future[bool]:  # pragma: no cover - interface
        """The non-blocking form of :meth:`flush`: a future resolved with its answer."""
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message queued on this connection before the call was written to the
        socket (lossy policy) or acknowledged by the peer (lossless; a reconnect is waited through).

        Returns False on timeout (``timeout`` in seconds, None = no limit) or when the session ends
        or is reset first; those messages then reach ``Dispatcher.ms_handle_discarded``. Call it from
        an application thread: on a worker or the dispatch thread (inside a Dispatcher callback) it
        raises :class:`msgr.errors.WouldDeadlockError`; there use :meth:`flush_future`.
        """
        refuse_blocking_call("Connection.flush()")
        return wait_flushed(self.flush_future(), timeout)

    def get_messenger(self) -> AsyncMessenger:
        """The messenger this connection belongs to."""
        return self._msgr

    def get_last_keepalive_ack(self) -> float:
        """The stamp (seconds, Ceph's utime_t) echoed by the last KEEPALIVE2_ACK; 0.0 before any.

        The stamp is the (wall clock) time this side sent the keepalive the peer acknowledged."""
        return 0.0

    def wait_keepalive_ack(self, after: float | None = None, timeout: float | None = None) -> bool:
        """Wait for a KEEPALIVE2_ACK newer than ``after``: True once :meth:`get_last_keepalive_ack`
        is later than ``after`` (None: later than it is at the call).

        Without a race between the send and the wait, one round trip is::

            before = conn.get_last_keepalive_ack()
            conn.send_keepalive()
            ok = conn.wait_keepalive_ack(after=before, timeout=5.0)

        Returns False on timeout (seconds, None = no limit) or when the connection is marked down
        or closed first. The connection's worker wakes the waiter when it reads the ack (no
        polling). Call it from an application thread: on a worker or the dispatch thread (inside a
        Dispatcher callback) it raises :class:`msgr.errors.WouldDeadlockError`.
        """
        refuse_blocking_call("Connection.wait_keepalive_ack()")
        if after is None:
            after = self.get_last_keepalive_ack()
        cond = self._keepalive_condition()
        deadline = None if timeout is None else time.monotonic() + timeout
        with cond:
            self._keepalive_waiters += 1
            try:
                while True:
                    if self.get_last_keepalive_ack() > after:
                        return True
                    if self._session_over():
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    cond.wait(left)
            finally:
                self._keepalive_waiters -= 1

    def get_peer_type(self) -> int | None:
        """The peer's entity type (``EntityName.TYPE_*``), None while unknown."""
        return self.peer_type

    @property
    def peer_type(self) -> int | None:
        """The peer's entity type (``EntityName.TYPE_*``): the type given to ``connect_to``, then
        the one the peer announced; None while unknown."""
        return None

    @property
    def peer_name(self) -> EntityName | None:
        """The peer's name as Ceph prints it (``osd.0``, ``client.4100``, ``mon.a``); None until the
        handshake (and, in v1, the peer's first message, which carries its number) told it."""
        return None

    @property
    def features(self) -> int:
        """The feature bits of the session (what both sides support, from the handshake; 0 before)."""
        return 0

    _last_fault: str | None = None
    _last_fault_error: Exception | None = None
    # made on the first wait_keepalive_ack (an idle connection carries none); the worker checks the
    # waiter count (no lock: the waiter rechecks the stamp under the condition) before notifying
    _keepalive_cond: threading.Condition | None = None
    _keepalive_waiters = 0

    def _keepalive_condition(self) -> threading.Condition:
        cond = self._keepalive_cond
        if cond is None:
            with _KEEPALIVE_COND_LOCK:
                cond = self._keepalive_cond
                if cond is None:
                    cond = self._keepalive_cond = threading.Condition()
        return cond

    def _wake_keepalive_waiters(self) -> None:
        """An ack was read, or the session ended: the waiters of wait_keepalive_ack look again."""
        cond = self._keepalive_cond
        if cond is not None:
            with cond:
                cond.notify_all()

    def _session_over(self) -> bool:
        """Marked down or closed: no ack can come any more."""
        return False

    @property
    def last_fault(self) -> str | None:
        """Why the session last faulted (a socket error, a refused connect, bad bytes from the
        peer...), None if it never did; see docs/FAULTS.md."""
        return self._last_fault

    @property
    def last_fault_error(self) -> Exception | None:
        """The exception behind :attr:`last_fault` when there is one (e.g.
        :class:`msgr.errors.BadBannerError`: the peer is not a Ceph v1 peer)."""
        return self._last_fault_error


class LoopbackConnection(Connection):
    """Our connection to ourselves: no socket, messages go straight to the dispatch queue."""

    def __init__(self, host: MessengerHost) -> None:
        self._host = host
        self._msgr = host.messenger
        self._ack_stamp = 0.0

    @property
    def peer_type(self) -> int:
        return self._msgr.my_name.type

    @property
    def peer_name(self) -> EntityName:
        return self._msgr.my_name

    @property
    def features(self) -> int:
        return self._msgr.get_policy(self._msgr.my_name.type).features_supported

    def send_message(self, msg: Message) -> None:
        h = msg.header
        me = self._msgr.my_name
        h.src_type, h.src_num = me.type, me.num
        if not h.priority:
            h.priority = self._host.default_send_priority
        msg._set_connection(self)
        self._host.perf.here().msgr_local_messages += 1
        self._host.dispatch_queue.local_delivery(msg)

    def send_keepalive(self) -> None:
        """Talking to ourselves: the keepalive is acknowledged at once."""
        self._ack_stamp = time.time()
        self._wake_keepalive_waiters()

    def get_last_keepalive_ack(self) -> float:
        return self._ack_stamp

    def is_connected(self) -> bool:
        return True

    def get_peer_addr(self) -> EntityAddr:
        return self._msgr.get_myaddr()

    def mark_down(self) -> None:
        pass

    def flush_future(self) -> Future[bool]:
        """True once every message sent to ourselves before the call was dispatched."""
        fut: Future[bool] = Future()
        self._host.dispatch_queue.barrier(lambda ok: resolve(fut, ok))
        return fut

    def __repr__(self) -> str:
        return f"<LoopbackConnection {self._msgr.my_name}>"

