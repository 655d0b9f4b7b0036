"""cephx login of a messenger with a monitor (the part of Ceph's MonClient that pymsgr has).

    ms = Messenger.create(EntityName.client(), config=Config(name="client.admin", keyring=PATH))
    ms.set_policy(EntityName.TYPE_MON, Policy.lossy_client()); ms.start()
    login = MonAuth(ms, EntityAddr.parse("v1:10.0.0.1:6789/0"))
    login.login()                   # MAuth exchange; the messenger now has a CephxAuthClient
    osd = ms.connect_to(EntityName.TYPE_OSD, osd_addr)   # carries a cephx authorizer, signs

:class:`MonAuth` runs :mod:`msgr.auth.mon_exchange` over a monitor session of the messenger
(its replies come in through a dispatcher it adds at the head of the chain) and then installs
a :class:`~msgr.auth.auth_client.CephxAuthClient` on the messenger
(:meth:`~msgr.messenger.AsyncMessenger.set_auth_client`). :meth:`MonAuth.keep_fresh` renews
tickets (three quarters through their validity) and a service's rotating secrets on a thread;
or call :meth:`MonAuth.refresh` yourself now and then. A daemon entity (``osd.N``) can also
:meth:`MonAuth.serve`: fetch its service type's rotating secrets and verify the authorizers
of incoming connects with them (:class:`~msgr.auth.auth_server.CephxAuthServer`). Blocking:
call it from an application thread, never from a dispatcher.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgr.auth.auth_client import CephxAuthClient
from msgr.auth.auth_server import CephxAuthServer, ServiceSecrets
from msgr.auth.cephx_client import CephxClient
from msgr.auth.errors import AuthError
from msgr.auth.mon_exchange import authenticate, fetch_rotating, renew
from msgr.auth.settings import ClientAuth, client_auth
from msgr.dispatcher import Dispatcher
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError
from msgr.message import Message
from msgr.messages.auth import MAuth, MAuthReply
from msgr.wire import Priority

if TYPE_CHECKING:  # pragma: no cover
    from msgr.messenger import AsyncMessenger

__all__ = ["MonAuth"]

_log = logging.getLogger(__name__)


class MonAuth(Dispatcher):
    """One messenger's cephx login with the monitor at ``mon_addr``.

    ``auth`` defaults to what the messenger's config says (``name``, ``keyring``,
    ``auth_client_required``: :func:`msgr.auth.settings.client_auth`); it must allow cephx.
    """

    def __init__(self, messenger: AsyncMessenger, mon_addr: EntityAddr, auth: ClientAuth | None = None,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.messenger = messenger
        self.mon_addr = mon_addr
        self.auth = auth if auth is not None else client_auth(messenger.config)
        if not self.auth.cephx or self.auth.key is None:
            raise AuthError(f"no cephx key for {self.auth.name} (keyring {self.auth.keyring_path}, "
                            f"auth_client_required {messenger.config.auth_client_required!r})")
        self.timeout = timeout
        self.clock = clock
        self.cephx = CephxClient(self.auth.name, self.auth.key)
        self.auth_client = CephxAuthClient(self.cephx, clock)
        self.conn: Any = None
        self.rounds = 0
        self._replies: queue.Queue[MAuthReply | None] = queue.Queue()
        self._added = False
        self.service_secrets = ServiceSecrets()
        self.auth_server: CephxAuthServer | None = None
        self.rotating_fetches = 0
        # one exchange at a time on the monitor session (the application's and keep_fresh's)
        self._exchange = threading.Lock()
        self._stop = threading.Event()
        self._fresher: threading.Thread | None = None

    # --- Dispatcher: the monitor session's MAuthReply and resets ---------------------------------
    def ms_dispatch(self, msg: Message) -> bool:
        if isinstance(msg, MAuthReply) and self.conn is not None and msg.get_connection() is self.conn:
            self._replies.put(msg)
            return True
        return False

    def ms_handle_reset(self, conn: Any) -> bool:
        if conn is self.conn:
            self._replies.put(None)   # wakes a waiting exchange: the session is gone
        return False

    def ms_handle_remote_reset(self, conn: Any) -> None:
        self.ms_handle_reset(conn)

    # --- the exchange ---------------------------------------------------------------------------
    def _send(self, msg: MAuth) -> None:
        msg.set_priority(Priority.DEFAULT)   # as a real client sends them
        self.conn.send_message(msg)

    def _recv(self) -> MAuthReply:
        try:
            r = self._replies.get(timeout=self.timeout)
        except queue.Empty:
            raise AuthError(f"no MAuthReply from {self.mon_addr} in {self.timeout:.0f} s") from None
        if r is None:
            raise AuthError(f"the monitor session to {self.mon_addr} was reset during authentication")
        return r

    def _session(self) -> None:
        if not self._added:
            self.messenger.add_dispatcher_head(self)
            self._added = True
        if self.conn is None or not self.conn.is_connected():
            while not self._replies.empty():
                self._replies.get_nowait()
            self.conn = self.messenger.connect_to(EntityName.TYPE_MON, self.mon_addr)

    def login(self) -> int:
        """Authenticate (session key, then service tickets) and give the messenger our
        authorizers; returns the round trips taken. Typed errors as msgr.auth.errors says."""
        with self._exchange:
            self._session()
            self.rounds = authenticate(self.cephx, self._send, self._recv, self.clock,
                                       lock=self.auth_client.lock)
        self.messenger.set_auth_client(self.auth_client)
        return self.rounds

    def renew(self) -> int:
        """Renew the tickets that are due (0 round trips when none is)."""
        with self._exchange:
            if not self.cephx.needs_renewal(self.clock()):
                return 0
            self._session()
            return renew(self.cephx, self._send, self._recv, self.clock, lock=self.auth_client.lock)

    def serve(self) -> CephxAuthServer:
        """A daemon entity (``osd.N``...) after :meth:`login`: fetch our service type's rotating
        secrets (``CEPHX_GET_ROTATING_KEY``) and make the messenger verify incoming authorizers
        with them (``set_auth_server``). Call again to refresh the secrets (they rotate)."""
        with self._exchange:
            self._session()
            fetch_rotating(self.cephx, self._send, self._recv, self.clock, lock=self.auth_client.lock)
            self.rotating_fetches += 1
        rotating = self.cephx.rotating
        if rotating is None:   # pragma: no cover - fetch_rotating sets it or raises
            raise AuthError("the monitor sent no rotating secrets")
        my_type = self.auth.name.type
        self.service_secrets.set_rotating(my_type, rotating)
        if self.auth_server is None:
            self.auth_server = CephxAuthServer(self.service_secrets, my_type, self.messenger.config,
                                               self.clock)
            self.messenger.set_auth_server(self.auth_server)
        return self.auth_server

    def rotating_due(self) -> bool:
        """A service's rotating secrets need fetching again: the oldest one we hold has expired
        (the monitor has rotated since; we still know its current and next secrets)."""
        rotating = self.cephx.rotating
        if self.auth_server is None or rotating is None or not rotating.secrets:
            return False
        return self.clock() >= min(float(k.expiration) for k in rotating.secrets.values())

    def refresh(self) -> int:
        """Renew the tickets that are due and, for a service, the rotating secrets when due;
        returns the requests made (0: nothing was due)."""
        n = self.renew()
        if self.rotating_due():
            self.serve()
            n += 1
        return n

    def keep_fresh(self, interval: float = 30.0) -> None:
        """Call :meth:`refresh` every ``interval`` seconds on a thread of ours until :meth:`close`.
        A failed refresh is logged (WARNING) and tried again at the next interval."""
        if self._fresher is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except (MsgrError, OSError) as exc:
                    _log.warning("cephx refresh for %s failed (retrying in %.0f s): %s",
                                 self.auth.name, interval, exc)

        self._fresher = threading.Thread(target=loop, name=f"cephx-refresh-{self.auth.name}", daemon=True)
        self._fresher.start()

    def close(self) -> None:
        """Stop :meth:`keep_fresh` (the tickets stay usable until they expire)."""
        self._stop.set()
        t, self._fresher = self._fresher, None
        if t is not None:
            t.join()

    @property
    def global_id(self) -> int:
        return self.cephx.global_id
