"""A messenger's cephx client side: authorizers for its connects, from one login's tickets.

:class:`CephxAuthClient` implements :class:`msgr.protocol.host.AuthClient`. It holds the
:class:`~msgr.auth.cephx_client.CephxClient` of a login with a monitor (``msgr.monc.MonAuth``)
and builds, for every connect to a daemon, a fresh :class:`~msgr.auth.tickets.Authorizer` from
that daemon type's ticket. Monitors get none (a client authenticates to them with MAuth), as Ceph.
Called from the messenger's workers: the ticket state is read under a lock, since a renewal may
replace it from another thread.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from msgr.auth.cephx_client import CephxClient
from msgr.auth.tickets import Authorizer
from msgr.entity import EntityName

__all__ = ["CephxAuthClient"]


class CephxAuthClient:
    """Authorizers from ``cephx``'s tickets; ``clock`` is the wall clock (ticket expiry)."""

    def __init__(self, cephx: CephxClient, clock: Callable[[], float] = time.time) -> None:
        self.cephx = cephx
        self.clock = clock
        self.lock = threading.Lock()   # held by a renewal too (msgr.monc)
        self.built = 0                 # authorizers handed out

    def get_authorizer(self, peer_type: int) -> Authorizer | None:
        """A new authorizer for a daemon of ``peer_type``; None toward a monitor.

        Raises :class:`~msgr.auth.errors.NoTicketError` / ``TicketExpiredError`` when we hold no
        usable ticket for that service: the connect attempt faults (Ceph's client does the same).
        """
        if peer_type == EntityName.TYPE_MON:
            return None
        with self.lock:
            a = self.cephx.build_authorizer(peer_type, self.clock())
            self.built += 1
            return a
