"""GonePeers: the highest peer_global_seq of the sessions that left a host's map, per peer address.

A connect whose global_seq is below that is older than a session already ended (row 8a of the
decision table, docs/PROTOCOL.md §7). The record only has to outlive the connects still in flight when
a session ends, so it keeps the most recently ended peers and forgets the oldest beyond ``capacity``:
a server that sees a new client address per connection must not grow without bound. A forgotten
address falls back to the plain rules (a stale connect is then opened, as Ceph does).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from msgr.entity import EntityAddr

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1

DEFAULT_CAPACITY = 4096


class GonePeers:
    """A bounded map: peer address -> highest peer_global_seq of its ended sessions (most recent kept)."""

    __slots__ = ("capacity", "_seqs")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("GonePeers needs room for at least one peer")
        self.capacity = capacity
        self._seqs: dict[EntityAddr, int] = {}   # insertion order = least recently ended first

    def remember(self, addr: EntityAddr, peer_global_seq: int) -> None:
        """A session with ``addr`` whose peer_global_seq was ``peer_global_seq`` ended."""
        seq = max(self._seqs.pop(addr, 0), peer_global_seq)
        self._seqs[addr] = seq
        if len(self._seqs) > self.capacity:
            del self._seqs[next(iter(self._seqs))]

    def session_left(self, addr: EntityAddr, proto: ProtocolV1) -> None:
        """The registered session ``proto`` for ``addr`` left the host's map: remembered if lossless. A
        lossy session is never resumed, so a stale connect does it no harm (and a server's stream of
        lossy client sessions stays out of the record)."""
        if not proto.policy.lossy:
            self.remember(addr, proto.peer_global_seq)

    def highest(self, addr: EntityAddr) -> int:
        """The highest peer_global_seq remembered for ``addr`` (0 if none)."""
        return self._seqs.get(addr, 0)

    def clear(self) -> None:
        self._seqs.clear()

    def __len__(self) -> int:
        return len(self._seqs)
