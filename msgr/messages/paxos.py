"""PaxosServiceMessage: the common head of messages handled by monitor services.

Front starts with u64 version, s16 session_mon (deprecated, -1) and u64
session_mon_tid (deprecated, 0); the subclass's own fields follow.
"""
from __future__ import annotations

from msgr.encoding import Decoder, Encoder
from msgr.message import Message


class PaxosServiceMessage(Message):
    """Base of MAuth, MMonCommand, MMonCommandAck (no TYPE: not registered)."""

    def __init__(self, version: int = 0) -> None:
        super().__init__()
        self.version = version
        self.session_mon = -1
        self.session_mon_tid = 0

    def paxos_encode(self, e: Encoder) -> None:
        e.u64(self.version).s16(self.session_mon).u64(self.session_mon_tid)

    def paxos_decode(self, d: Decoder) -> None:
        self.version = d.u64()
        self.session_mon = d.s16()
        self.session_mon_tid = d.u64()
