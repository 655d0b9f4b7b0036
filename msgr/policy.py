"""Connection policies with Ceph's semantics (``Messenger::Policy``).

A policy is chosen per peer entity type. ``lossy`` drops the session on a
fault; ``server`` never initiates a reconnect; ``standby`` keeps an idle
lossless session without a socket; ``resetcheck`` detects peer restarts.
"""
from __future__ import annotations

from dataclasses import dataclass

from msgr.features import FEATURES_REQUIRED_DEFAULT, FEATURES_SUPPORTED_DEFAULT
from msgr.throttle import Throttle


@dataclass
class Policy:
    """How sessions with one type of peer behave (set with ``Messenger.set_policy(peer_type, policy)``).

    ``lossy``: a fault ends the session; queued and unacknowledged messages are dropped and
    dispatchers get ``ms_handle_reset``.  Otherwise (lossless) sent messages stay until the peer
    acknowledges them and are resent after a reconnect, never twice.
    ``server``: this side never reconnects; the peer does.  ``standby``: a lossless session that
    faulted while idle waits without a socket until there is something to send.  ``resetcheck``:
    a peer that restarted (new nonce, connect_seq 0) resets the session instead of resuming it.
    ``register_lossy_clients``: lossy incoming sessions enter the connection map (so one peer
    identity has one session).  ``features_*``: feature bits offered and demanded in the handshake.
    ``throttler_*``: limits on bytes and messages received from such peers and not yet dispatched.

    Use the constructors named as Ceph's (``Policy.lossy_client()``, ``Policy.stateless_server()``,
    ...) rather than setting the flags one by one.
    """

    lossy: bool = False
    server: bool = False
    standby: bool = False
    resetcheck: bool = False
    register_lossy_clients: bool = True
    features_supported: int = FEATURES_SUPPORTED_DEFAULT
    features_required: int = FEATURES_REQUIRED_DEFAULT
    throttler_bytes: Throttle | None = None
    throttler_messages: Throttle | None = None

    @property
    def client_of_server(self) -> bool:
        """This side is the lossless client of a server (:meth:`lossless_client`): it alone reconnects,
        so in a connection race its own attempt wins (PROTOCOL.md §7 rows 17/18)."""
        return not (self.server or self.lossy or self.standby)

    def copy(self) -> Policy:
        """A shallow copy (the throttles are shared, as in Ceph)."""
        cls = type(self)
        twin = cls.__new__(cls)   # not replace(): it re-runs __init__ (~4x the cost, once per session)
        twin.__dict__.update(self.__dict__)
        return twin

    @classmethod
    def stateful_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Lossless server: keeps sessions with clients across faults, detects their restarts."""
        return cls(lossy=False, server=True, standby=True, resetcheck=True, features_required=req)

    @classmethod
    def stateless_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Lossy server (monitors and OSDs toward clients): a fault ends the session, the client reconnects."""
        # not registered in the connection map: two sockets from one identity are two sessions (Ceph: rlc false)
        return cls(lossy=True, server=True, standby=False, resetcheck=False, register_lossy_clients=False,
                   features_required=req)

    @classmethod
    def stateless_registered_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Like :meth:`stateless_server`, but incoming sessions are registered by peer address."""
        return cls(lossy=True, server=True, standby=False, resetcheck=False, register_lossy_clients=True,
                   features_required=req)

    @classmethod
    def lossless_peer(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Lossless between equals (OSD to OSD): either side reconnects, idle sessions go to standby."""
        return cls(lossy=False, server=False, standby=True, resetcheck=False, features_required=req)

    @classmethod
    def lossless_peer_reuse(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """:meth:`lossless_peer` that also detects a restarted peer and resets the session."""
        return cls(lossy=False, server=False, standby=True, resetcheck=True, features_required=req)

    @classmethod
    def lossy_client(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Lossy client (as Ceph clients talk to monitors and OSDs): a fault ends the session."""
        return cls(lossy=True, server=False, standby=False, resetcheck=False, features_required=req)

    @classmethod
    def lossless_client(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        """Lossless client: reconnects and resends after faults, detects a restarted server."""
        return cls(lossy=False, server=False, standby=False, resetcheck=True, features_required=req)
