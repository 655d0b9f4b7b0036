"""FakeHost: a ProtocolHost with no messenger behind it (tests and the simulator).

Holds what a messenger would: our name and address, config, policies per
peer type, the connection map, the process-wide global_seq counter, the
dispatch throttle, a seeded RNG and a fake wall clock. Single-threaded.
"""
from __future__ import annotations

import contextlib
import random
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.protocol.gone_peers import GonePeers
from msgr.throttle import Throttle

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.host import AuthVerdict, ConnectAuthorizer
    from msgr.protocol.protocol_v1 import ProtocolV1


class InMemoryHost:
    """The single-threaded ProtocolHost bookkeeping shared by FakeHost and the simulator's endpoints.

    Subclasses set ``my_name``, ``config``, ``myaddr``, ``global_seq``, ``conns``, ``gone_pgs``, ``policies``,
    ``default_policy`` and ``learned`` and provide ``wall_clock``.
    """

    my_name: EntityName
    config: Config
    myaddr: EntityAddr
    global_seq: int
    conns: dict
    gone_pgs: GonePeers   # peer addr -> highest peer_global_seq of its unregistered sessions
    policies: dict
    default_policy: Policy
    learned: list
    auth_client: Any = None   # an object with get_authorizer(peer_type) (cephx), or None: auth none
    auth_server: Any = None   # an object with verify_authorizer(...) (cephx), or None: auth none

    def get_myaddr(self) -> EntityAddr:
        return self.myaddr

    def learned_addr(self, seen: EntityAddr) -> None:
        self.learned.append(seen)
        if self.myaddr.is_blank_ip() and self.config.ms_learn_addr_from_peer:
            self.myaddr = self.myaddr.with_ip(seen.ip)

    def get_global_seq(self, at_least: int = 0) -> int:
        self.global_seq = max(self.global_seq, at_least) + 1
        return self.global_seq

    def get_policy(self, peer_type: int) -> Policy:
        return self.policies.get(peer_type, self.default_policy)

    def set_policy(self, peer_type: int, policy: Policy) -> None:
        self.policies[peer_type] = policy

    def set_default_policy(self, policy: Policy) -> None:
        self.default_policy = policy

    def lookup_conn(self, peer_addr: EntityAddr) -> ProtocolV1 | None:
        return self.conns.get(peer_addr)

    def register_conn(self, proto: ProtocolV1) -> bool:
        cur = self.conns.get(proto.peer_addr)
        if cur is not None and cur is not proto:
            return False
        self.conns[proto.peer_addr] = proto
        return True

    def get_authorizer(self, peer_type: int) -> ConnectAuthorizer | None:
        ac = self.auth_client
        return None if ac is None else cast("ConnectAuthorizer | None", ac.get_authorizer(peer_type))

    def verify_authorizer(self, peer_type: int, protocol: int, blob: bytes,
                          challenge: object) -> AuthVerdict | None:
        srv = self.auth_server
        if srv is None:
            return None
        return cast("AuthVerdict | None", srv.verify_authorizer(peer_type, protocol, blob, challenge))

    def session_lock(self, proto: ProtocolV1) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()   # single-threaded: nothing runs between two steps

    def unregister_conn(self, proto: ProtocolV1) -> None:
        # a session may also be known by the address it was dialled at (its connection's target)
        for key in (proto.peer_addr, getattr(proto.connection, "target", None)):
            if key is not None and self.conns.get(key) is proto:
                self.gone_pgs.session_left(key, proto)
                del self.conns[key]

    def gone_peer_global_seq(self, peer_addr: EntityAddr) -> int:
        return self.gone_pgs.highest(peer_addr)


class FakeHost(InMemoryHost):
    """Implements :class:`msgr.protocol.host.ProtocolHost` in memory."""

    def __init__(self, name: EntityName, addr: EntityAddr, config: Config | None = None, seed: int = 0,
                 policies: dict[int, Policy] | None = None, default_policy: Policy | None = None,
                 global_seq: int = 0) -> None:
        self.my_name = name
        self.config = config or Config()
        self.dispatch_throttle = Throttle("dispatch", self.config.ms_dispatch_throttle_bytes)
        self.rng = random.Random(seed)
        self.myaddr = addr
        self.policies: dict[int, Policy] = dict(policies or {})
        self.default_policy = default_policy or Policy.stateless_server()
        self.conns: dict[EntityAddr, ProtocolV1] = {}
        self.gone_pgs = GonePeers()
        self.global_seq = global_seq
        self.learned: list[EntityAddr] = []
        self.wall = (1_700_000_000, 0)

    def wall_clock(self) -> tuple[int, int]:
        sec, nsec = self.wall
        self.wall = (sec, nsec + 1000)
        return sec, nsec
