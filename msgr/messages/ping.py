"""MPing (CEPH_MSG_PING = 2): an empty message used by tests and tools."""
from __future__ import annotations

from msgr.message import Message

CEPH_MSG_PING = 2


class MPing(Message):
    TYPE = CEPH_MSG_PING
    HEAD_VERSION = 1
    COMPAT_VERSION = 1
