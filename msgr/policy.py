"""Connection policies with Ceph's semantics (``Messenger::Policy``).

A policy is chosen per peer entity type. ``lossy`` drops the session on a
fault; ``server`` never initiates a reconnect; ``standby`` keeps an idle
lossless session without a socket; ``resetcheck`` detects peer restarts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from msgr.features import FEATURES_REQUIRED_DEFAULT, FEATURES_SUPPORTED_DEFAULT
from msgr.throttle import Throttle


@dataclass
class Policy:
    lossy: bool = False
    server: bool = False
    standby: bool = False
    resetcheck: bool = False
    register_lossy_clients: bool = True
    features_supported: int = FEATURES_SUPPORTED_DEFAULT
    features_required: int = FEATURES_REQUIRED_DEFAULT
    throttler_bytes: Throttle | None = None
    throttler_messages: Throttle | None = None

    def copy(self) -> Policy:
        return replace(self)

    @classmethod
    def stateful_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=False, server=True, standby=True, resetcheck=True, features_required=req)

    @classmethod
    def stateless_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        # not registered in the connection map: two sockets from one identity are two sessions (Ceph: rlc false)
        return cls(lossy=True, server=True, standby=False, resetcheck=False, register_lossy_clients=False,
                   features_required=req)

    @classmethod
    def stateless_registered_server(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=True, server=True, standby=False, resetcheck=False, register_lossy_clients=True,
                   features_required=req)

    @classmethod
    def lossless_peer(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=False, server=False, standby=True, resetcheck=False, features_required=req)

    @classmethod
    def lossless_peer_reuse(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=False, server=False, standby=True, resetcheck=True, features_required=req)

    @classmethod
    def lossy_client(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=True, server=False, standby=False, resetcheck=False, features_required=req)

    @classmethod
    def lossless_client(cls, req: int = FEATURES_REQUIRED_DEFAULT) -> Policy:
        return cls(lossy=False, server=False, standby=False, resetcheck=True, features_required=req)
