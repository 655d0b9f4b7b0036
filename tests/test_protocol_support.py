"""Helpers shared by the tests/test_protocol_*.py files (a raw v1 peer, hosts, messages)."""
from __future__ import annotations

import struct

from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.actions import Deliver, Fault, ReplaceExisting
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet
from msgr.wire import BANNER, ConnectMsg, ConnectReply, Tag, pack_u64

MON, CLIENT, OSD = 1, 8, 4
MON_ADDR = EntityAddr.parse("v1:127.0.0.1:6789/0")
PEER_ADDR = EntityAddr.parse("v1:127.0.0.1:7000/123")
SOCK_PEER = EntityAddr.parse("v1:127.0.0.1:45000/0")
AUTH_NONE_MON_A = bytes.fromhex("01 01000000 01000000 61 0000000000000000".replace(" ", ""))
TEST_TYPE = 0x7001


def mon_host(**kw) -> FakeHost:
    """A monitor-like host: MON peers lossless_peer_reuse, everyone else stateless_server."""
    return FakeHost(EntityName.mon("a"), MON_ADDR, policies={MON: Policy.lossless_peer_reuse()},
                    default_policy=Policy.stateless_server(), **kw)


def connect_msg(features: int = CEPH_FEATURES_ALL_PACIFIC, host_type: int = MON, gseq: int = 1, cseq: int = 0,
                proto: int = 13, auth: bytes | None = None, auth_proto: int | None = None) -> bytes:
    if auth is None:
        auth = AUTH_NONE_MON_A if host_type == MON else b""
    if auth_proto is None:
        auth_proto = 1 if auth else 0
    return ConnectMsg(features, host_type, gseq, cseq, proto, auth_proto, len(auth), 0).pack() + auth


def make_msg(i: int, data_len: int = 0, middle_len: int = 0, prio: int = 0) -> Message:
    m = Message()
    m.header.type = TEST_TYPE
    m.header.priority = prio
    m.front = struct.pack("<Q", i)
    m.middle = bytes([i & 0xFF]) * middle_len
    m.data = bytes([(i * 7) & 0xFF]) * data_len
    return m


def delivered(acts: list) -> list[Message]:
    """The messages of every Deliver action in ``acts``, in order."""
    return [m for a in acts if isinstance(a, Deliver) for m in a.msgs]


def msg_id(m: Message) -> int:
    return struct.unpack_from("<Q", m.front)[0]


def traffic_with_breaks(net: WireNet, p: ProtocolV1, b: FakeHost, a_addr: EntityAddr, n: int,
                        every: int) -> int:
    """Lossless traffic both ways under faults, on a WireNet: messages 0..n-1 from ``p``'s host to
    ``b`` (data of 0, 10 or 5000 bytes) and, once ``b`` has a session for ``a_addr``, from ``b``
    back; every ``every`` messages a few random steps of the net and, half the time, ``p``'s
    link broken. Runs the net to the end; returns how many breaks took."""
    breaks = 0
    for i in range(n):
        net.send(p, make_msg(i, data_len=net.rng.choice([0, 10, 5000])))
        s = b.conns.get(a_addr)
        if s is not None:
            net.send(s, make_msg(i))
        if i % every == 0:
            for _ in range(net.rng.randint(1, 25)):
                net.step()
            if net.rng.random() < 0.5 and net.break_link(p):
                breaks += 1
    net.run()
    return breaks


class RawPeer:
    """Plays a v1 client against a server ProtocolV1 by hand (byte level), following replaces."""

    def __init__(self, host: FakeHost, claimed: EntityAddr = PEER_ADDR, sock_peer: EntityAddr = SOCK_PEER) -> None:
        self.host = host
        self.proto = ProtocolV1(host)
        self.acts: list = []
        self.acts += self.proto.start_accept(sock_peer, host.get_myaddr(), 0)
        self.identify = b"".join(bytes(b) for b in self.proto.take_output())
        self.acts += self.proto.receive_data(BANNER + claimed.encode_legacy(), 0)

    def connect(self, **kw) -> tuple[ConnectReply, bytes]:
        """Send a connect; returns the reply and the bytes after it (u64 for SEQ, ...)."""
        acts = self.proto.receive_data(connect_msg(**kw), 0)
        self.acts += acts
        for a in acts:
            if isinstance(a, ReplaceExisting):
                self.acts += a.existing.adopt_socket(SOCK_PEER, self.host.get_myaddr(), 0, a.reset_session)
                self.proto = a.existing
        out = b"".join(bytes(b) for b in self.proto.take_output())
        return ConnectReply.unpack(out), out[ConnectReply.SIZE:]

    def send_seq(self, seq: int = 0) -> list:
        acts = self.proto.receive_data(pack_u64(seq), 0)
        self.acts += acts
        return acts

    def close(self) -> list:
        acts = self.proto.buffer_updated(0, 0)
        self.acts += acts
        return acts

    def faults(self) -> list[Fault]:
        return [a for a in self.acts if isinstance(a, Fault)]


def reply_fields(r: ConnectReply) -> tuple:
    return (Tag(r.tag).name, r.global_seq, r.connect_seq)
