"""MAuth (17) and MAuthReply (18): authentication with a monitor (docs/PROTOCOL.md §10.2-10.3).

pymsgr speaks auth ``none`` only: the first MAuth carries protocol 0
("negotiate") and a payload listing the methods the client accepts; with
``none`` the monitor answers at once with a global_id and result 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from msgr.encoding import AuthEntityName, Decoder, Encoder, dec_u32, enc_u32
from msgr.errors import DecodeError
from msgr.message import Message
from msgr.messages.paxos import PaxosServiceMessage

CEPH_MSG_AUTH = 17
CEPH_MSG_AUTH_REPLY = 18

CEPH_AUTH_UNKNOWN = 0
CEPH_AUTH_NONE = 1
CEPH_AUTH_CEPHX = 2


@dataclass(slots=True)
class AuthNegotiation:
    """The payload of a protocol-0 MAuth: methods the client accepts, its name and global_id."""

    methods: list[int] = field(default_factory=lambda: [CEPH_AUTH_NONE])
    name: AuthEntityName = field(default_factory=AuthEntityName)
    global_id: int = 0
    struct_v: int = 1

    def encode(self) -> bytes:
        e = Encoder().u8(self.struct_v).list(self.methods, enc_u32)
        return e.auth_entity_name(self.name).u64(self.global_id).getvalue()

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> AuthNegotiation:
        d = Decoder(buf, what="auth negotiation")
        v = d.u8()
        if v < 1:
            raise DecodeError(f"auth negotiation: struct_v {v} is unknown")
        methods = d.list(dec_u32, 4)
        name = d.auth_entity_name()
        return cls(methods, name, d.u64(), v)


class MAuth(PaxosServiceMessage):
    """Client → monitor authentication request."""

    TYPE = CEPH_MSG_AUTH
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    def __init__(self, protocol: int = CEPH_AUTH_UNKNOWN, auth_payload: bytes = b"",
                 monmap_epoch: int = 0) -> None:
        super().__init__()
        self.protocol = protocol
        self.auth_payload = auth_payload
        self.monmap_epoch = monmap_epoch

    @classmethod
    def none_request(cls, name: AuthEntityName | None = None, global_id: int = 0,
                     monmap_epoch: int = 0, methods: list[int] | None = None) -> MAuth:
        """The first MAuth exactly as a real client sends it (auth none only by default)."""
        neg = AuthNegotiation(methods if methods is not None else [CEPH_AUTH_NONE],
                              name or AuthEntityName(), global_id)
        return cls(CEPH_AUTH_UNKNOWN, neg.encode(), monmap_epoch)

    def negotiation(self) -> AuthNegotiation:
        """Parse ``auth_payload`` of a protocol-0 request."""
        if self.protocol != CEPH_AUTH_UNKNOWN:
            raise DecodeError(f"MAuth: protocol {self.protocol} is not a negotiation")
        return AuthNegotiation.decode(self.auth_payload)

    def encode_payload(self, features: int) -> None:
        e = Encoder()
        self.paxos_encode(e)
        e.u32(self.protocol).bytes(self.auth_payload).u32(self.monmap_epoch)
        self.front = e.getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MAuth")
        self.paxos_decode(d)
        self.protocol = d.u32()
        self.auth_payload = d.bytes()
        # monmap_epoch came later; old clients may omit it
        self.monmap_epoch = d.u32() if d.remaining() >= 4 else 0


class MAuthReply(Message):
    """Monitor → client: chosen protocol, result, global_id."""

    TYPE = CEPH_MSG_AUTH_REPLY
    HEAD_VERSION = 1
    COMPAT_VERSION = 1

    def __init__(self, protocol: int = CEPH_AUTH_NONE, result: int = 0, global_id: int = 0,
                 result_bl: bytes = b"", result_msg: str = "") -> None:
        super().__init__()
        self.protocol = protocol
        self.result = result
        self.global_id = global_id
        self.result_bl = result_bl
        self.result_msg = result_msg

    def encode_payload(self, features: int) -> None:
        e = Encoder().u32(self.protocol).s32(self.result).u64(self.global_id)
        self.front = e.bytes(self.result_bl).string(self.result_msg).getvalue()

    def decode_payload(self) -> None:
        d = Decoder(self.front, what="MAuthReply")
        self.protocol = d.u32()
        self.result = d.s32()
        self.global_id = d.u64()
        self.result_bl = d.bytes()
        self.result_msg = d.string()
