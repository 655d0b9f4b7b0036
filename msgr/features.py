"""Ceph feature bits (``ceph_features.h``) and the sets pymsgr advertises.

Some bits were reused: a feature of "incarnation 2" only counts when
SERVER_JEWEL (bit 57) is also set, incarnation 3 also needs SERVER_MIMIC
(bit 28). Each constant below is the full mask to test, so
``has_feature(features, X)`` is always ``features & X == X``.
"""
from __future__ import annotations

_INC2 = 1 << 57
_INC3 = (1 << 57) | (1 << 28)

UID = 1 << 0
NOSRCADDR = 1 << 1
SERVER_NAUTILUS = (1 << 2) | _INC3
SUBSCRIBE2 = 1 << 4
MONNAMES = 1 << 5
RECONNECT_SEQ = 1 << 6
PGID64 = 1 << 9
OSDENC = 1 << 13
MONENC = 1 << 15
SERVER_OCTOPUS = (1 << 16) | _INC3
CRUSH_TUNABLES = 1 << 18
SERVER_PACIFIC = (1 << 20) | _INC3
SERVER_LUMINOUS = (1 << 21) | _INC2
MSG_AUTH = 1 << 23
CRUSH_TUNABLES2 = 1 << 25
SERVER_MIMIC = (1 << 28) | _INC2
CRUSH_TUNABLES3 = 1 << 41
MSGR_KEEPALIVE2 = 1 << 42
CRUSH_V4 = 1 << 48
MON_STATEFUL_SUB = 1 << 57
SERVER_JEWEL = 1 << 57
CRUSH_TUNABLES5 = 1 << 58
MSG_ADDR2 = 1 << 59
CEPHX_V2 = 1 << 61

#: What a real Ceph 16.2.15 client and monitor advertise (observed on the wire).
CEPH_FEATURES_ALL_PACIFIC = 0x3F01CFBDFFFDFFFF

#: What pymsgr advertises by default: the pacific set, because real peers encode
#: their payloads by it and pymsgr decodes those encodings.
FEATURES_SUPPORTED_DEFAULT = CEPH_FEATURES_ALL_PACIFIC

#: The least a pacific monitor requires of a client (crush/osdmap-derived, observed).
MON_REQUIRES_OF_CLIENT = 0x0401020002040000

#: What pymsgr requires of any peer by default (like Ceph: nothing at the messenger level).
FEATURES_REQUIRED_DEFAULT = 0


def has_feature(features: int, mask: int) -> bool:
    return features & mask == mask


def missing_features(have: int, required: int) -> int:
    return required & ~have
