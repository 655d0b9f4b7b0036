"""FakeHost: a ProtocolHost with no messenger behind it (tests and the simulator).

Holds what a messenger would: our name and address, config, policies per
peer type, the connection map, the process-wide global_seq counter, the
dispatch throttle, a seeded RNG and a fake wall clock. Single-threaded.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.throttle import Throttle

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1


class FakeHost:
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
        self.conns: dict[EntityAddr, "ProtocolV1"] = {}
        self.global_seq = global_seq
        self.learned: list[EntityAddr] = []
        self.wall = (1_700_000_000, 0)

    # --- ProtocolHost -------------------------------------------------------------------------------
    def get_myaddr(self) -> EntityAddr:
        return self.myaddr

    def learned_addr(self, seen: EntityAddr) -> None:
        self.learned.append(seen)
        if self.myaddr.is_blank_ip():
            self.myaddr = self.myaddr.with_ip(seen.ip)

    def get_global_seq(self, at_least: int = 0) -> int:
        self.global_seq = max(self.global_seq, at_least) + 1
        return self.global_seq

    def get_policy(self, peer_type: int) -> Policy:
        return self.policies.get(peer_type, self.default_policy)

    def lookup_conn(self, peer_addr: EntityAddr) -> "ProtocolV1 | None":
        return self.conns.get(peer_addr)

    def register_conn(self, proto: "ProtocolV1") -> bool:
        cur = self.conns.get(proto.peer_addr)
        if cur is not None and cur is not proto:
            return False
        self.conns[proto.peer_addr] = proto
        return True

    def unregister_conn(self, proto: "ProtocolV1") -> None:
        if proto.peer_addr is not None and self.conns.get(proto.peer_addr) is proto:
            del self.conns[proto.peer_addr]

    def wall_clock(self) -> tuple[int, int]:
        sec, nsec = self.wall
        self.wall = (sec, nsec + 1000)
        return sec, nsec

    def set_policy(self, peer_type: int, policy: Policy) -> None:
        self.policies[peer_type] = policy
