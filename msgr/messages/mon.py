"""Monitor client messages: versions, subscriptions, maps, commands, config (docs/PROTOCOL.md §10.4-10.7).

Header versions are the ones a Ceph 16 peer sends (checked on a real mon).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from msgr.encoding import Decoder, Encoder, dec_string, enc_string
from msgr.message import Message
from msgr.messages.monmap import MonMap
from msgr.messages.paxos import PaxosServiceMessage

CEPH_MSG_MON_MAP = 4
CEPH_MSG_MON_SUBSCRIBE = 15
CEPH_MSG_MON_SUBSCRIBE_ACK = 16
CEPH_MSG_MON_GET_VERSION = 19
CEPH_MSG_MON_GET_VERSION_REPLY = 20
MSG_MON_COMMAND = 50
MSG_MON_COMMAND_ACK = 51
MSG_CONFIG = 62

CEPH_SUBSCRIBE_ONETIME = 1

_ZERO_FSID = uuid.UUID(int=0)


class MMonGetVersion(Message):
    """Ask for the newest epoch of a map (``what`` = "osdmap", "monmap", ...)."""

    TYPE = CEPH_MSG_MON_GET_VERSION

    def __init__(self, what: str = "osdmap", handle: int = 0) -> None:
        super().__init__()
        self.what = what
        self.handle = handle

    def encode_payload(self, features: int) -> None:
        self.front = Encoder().u64(self.handle).string(self.what).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonGetVersion")
        self.handle = d.u64()
        self.what = d.string()


class MMonGetVersionReply(Message):
    """The newest and oldest epoch the monitor has; ``handle`` echoes the request's."""

    TYPE = CEPH_MSG_MON_GET_VERSION_REPLY
    HEAD_VERSION = 2
    COMPAT_VERSION = 2

    def __init__(self, handle: int = 0, version: int = 0, oldest_version: int = 0) -> None:
        super().__init__()
        self.handle = handle
        self.version = version
        self.oldest_version = oldest_version

    def encode_payload(self, features: int) -> None:
        self.front = Encoder().u64(self.handle).u64(self.version).u64(self.oldest_version).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonGetVersionReply")
        self.handle = d.u64()
        self.version = d.u64()
        self.oldest_version = d.u64() if self.header.version >= 2 else 0


@dataclass(slots=True)
class SubscribeItem:
    """``ceph_mon_subscribe_item``: first epoch wanted (0 = current) and flags."""

    start: int = 0
    flags: int = 0


class MMonSubscribe(Message):
    """Subscribe to maps; v3 adds the client's hostname."""

    TYPE = CEPH_MSG_MON_SUBSCRIBE
    HEAD_VERSION = 3
    COMPAT_VERSION = 1

    def __init__(self, what: dict[str, SubscribeItem] | None = None, hostname: str = "") -> None:
        super().__init__()
        self.what: dict[str, SubscribeItem] = dict(what or {})
        self.hostname = hostname

    def add(self, name: str, start: int = 0, flags: int = 0) -> MMonSubscribe:
        self.what[name] = SubscribeItem(start, flags)
        return self

    def encode_payload(self, features: int) -> None:
        e = Encoder().map(self.what, enc_string, lambda e, i: e.u64(i.start).u8(i.flags))
        self.front = e.string(self.hostname).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonSubscribe")
        if self.header.version < 2:
            # ceph_mon_subscribe_item_old: u64 unused, u64 have, u8 onetime
            def item(d: Decoder) -> SubscribeItem:
                d.u64()
                have = d.u64()
                return SubscribeItem(have + 1 if have else 0, CEPH_SUBSCRIBE_ONETIME if d.u8() else 0)
            self.what = d.map(dec_string, item, 21)
        else:
            self.what = d.map(dec_string, lambda d: SubscribeItem(d.u64(), d.u8()), 13)
        self.hostname = d.string() if self.header.version >= 3 else ""


class MMonSubscribeAck(Message):
    """Sent only to sessions without MON_STATEFUL_SUB: renew within ``interval`` seconds."""

    TYPE = CEPH_MSG_MON_SUBSCRIBE_ACK

    def __init__(self, interval: int = 0, fsid: uuid.UUID = _ZERO_FSID) -> None:
        super().__init__()
        self.interval = interval
        self.fsid = fsid

    def encode_payload(self, features: int) -> None:
        self.front = Encoder().u32(self.interval).uuid(self.fsid).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonSubscribeAck")
        self.interval = d.u32()
        self.fsid = d.uuid()


class MMonMap(Message):
    """The monitor map; ``monmap`` is decoded from ``monmapbl`` on receive."""

    TYPE = CEPH_MSG_MON_MAP

    def __init__(self, monmap: MonMap | None = None) -> None:
        super().__init__()
        self.monmap = monmap
        self.monmapbl = b""

    def encode_payload(self, features: int) -> None:
        if self.monmap is not None:
            self.monmapbl = self.monmap.encode(features)
        self.front = Encoder().bytes(self.monmapbl).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonMap")
        self.monmapbl = d.bytes()  # newer trees append fields: ignored
        self.monmap = MonMap.decode(self.monmapbl)


class MMonCommand(PaxosServiceMessage):
    """A command for the monitor: ``cmd`` is a list of JSON strings."""

    TYPE = MSG_MON_COMMAND

    def __init__(self, cmd: list[str] | None = None, fsid: uuid.UUID = _ZERO_FSID,
                 inbl: bytes = b"") -> None:
        super().__init__()
        self.fsid = fsid
        self.cmd = list(cmd or [])
        self.data = inbl

    def encode_payload(self, features: int) -> None:
        e = Encoder()
        self.paxos_encode(e)
        self.front = e.uuid(self.fsid).list(self.cmd, enc_string).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonCommand")
        self.paxos_decode(d)
        self.fsid = d.uuid()
        self.cmd = d.list(dec_string, 4)


class MMonCommandAck(PaxosServiceMessage):
    """The answer: ``r`` (0 or -errno), status text ``rs``, output in the data segment."""

    TYPE = MSG_MON_COMMAND_ACK

    def __init__(self, cmd: list[str] | None = None, r: int = 0, rs: str = "",
                 outbl: bytes = b"", version: int = 0) -> None:
        super().__init__(version)
        self.cmd = list(cmd or [])
        self.r = r
        self.rs = rs
        self.data = outbl

    @property
    def outbl(self) -> bytes:
        return bytes(self.data)

    def encode_payload(self, features: int) -> None:
        e = Encoder()
        self.paxos_encode(e)
        self.front = e.s32(self.r).string(self.rs).list(self.cmd, enc_string).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MMonCommandAck")
        self.paxos_decode(d)
        self.r = d.s32()
        self.rs = d.string()
        self.cmd = d.list(dec_string, 4)


class MConfig(Message):
    """Central config options for the receiver (``ceph config`` values): name → value."""

    TYPE = MSG_CONFIG

    def __init__(self, config: dict[str, str] | None = None) -> None:
        super().__init__()
        self.config = dict(config or {})

    def encode_payload(self, features: int) -> None:
        self.front = Encoder().map(self.config, enc_string, enc_string).getvalue()

    def decode_payload(self) -> None:
        self.config = Decoder(self.front, what="MConfig").map(dec_string, dec_string, 8)
