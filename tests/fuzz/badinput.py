"""Bad-input harness: one real ProtocolV1 per role, driven to a state by a clean recorded stream.

A clean simulated session (seeded, so the nonces and seqs are the same
each time) is recorded: the bytes the accepting side read and the bytes
the connecting side read. ``prefixes(role)`` gives, for every state the
machine passes through, an offset into that stream where it sits in that
state. ``feed(role, prefix, tail)`` builds a fresh machine of that role,
feeds the clean prefix and then the adversarial tail, and returns what
happened: the actions, the states and the allocation peak.
"""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, field

from msgr.entity import EntityName
from msgr.errors import MsgrError
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol import actions as A
from msgr.protocol.states import State
from msgr.sim import SimConnection, SimNetwork
from msgr.sim.chaos import make_message

SEED = 7
ROLES = ("accept", "connect")
# receive buffers + one message's own preallocated segment; an unchecked length would be GBs
ALLOC_LIMIT = 4 << 20


def _pair(seed: int = SEED, policy: Policy | None = None):
    net = SimNetwork(seed)
    pol = policy or Policy.lossless_peer()
    a = net.add_endpoint(EntityName.osd(0), policies={EntityName.TYPE_OSD: pol.copy()})
    b = net.add_endpoint(EntityName.osd(1), policies={EntityName.TYPE_OSD: pol.copy()})
    return net, a, b


def record_session(seed: int = SEED) -> dict[str, bytes]:
    """The byte streams of a clean session with messages, acks and keepalives both ways."""
    net, a, b = _pair(seed)
    streams = {"accept": bytearray(), "connect": bytearray()}
    orig = net.write

    def tap(end, data):
        if end.sock.id == 1:
            streams["accept" if end.side == 0 else "connect"].extend(data)
        orig(end, data)
    net.write = tap
    c = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
    for i, (front, data) in enumerate(((10, 0), (300, 9000), (0, 0), (5000, 20000))):
        c.send_message(make_message(c.uid, i + 1, 127, front, data))
    c.send_keepalive()
    net.run_for(200_000)
    back = b.connections()[0]
    back.send_message(make_message(back.uid, 1, 127, 40, 0))
    back.send_keepalive()
    net.run_for(200_000)
    assert b.records_of("deliver") and a.records_of("deliver"), "the clean session must carry messages"
    return {k: bytes(v) for k, v in streams.items()}


@dataclass
class Outcome:
    actions: list = field(default_factory=list)
    states: list = field(default_factory=list)
    peak: int = 0
    proto: object = None

    @property
    def faults(self) -> list[A.Fault]:
        return [a for a in self.actions if isinstance(a, A.Fault)]


def _fresh(role: str, seed: int = SEED):
    net, a, b = _pair(seed)
    if role == "accept":
        conn = SimConnection(b)
        peer = a.get_myaddr().with_port(40001).with_nonce(0)
        acts = conn.proto.start_accept(peer, b.get_myaddr().with_nonce(0), 0)
    else:
        conn = SimConnection(a, b.get_myaddr(), EntityName.TYPE_OSD)
        acts = conn.proto.start_connect(b.get_myaddr(), EntityName.TYPE_OSD, 0)
        acts += conn.proto.on_connected(a.get_myaddr().with_port(40001).with_nonce(0), 0)
    conn.proto.take_output()
    return conn.proto, acts


def prefixes(role: str, stream: bytes) -> dict[State, list[int]]:
    """Offsets of ``stream`` (fed byte by byte) at which the machine is in each state."""
    proto, _ = _fresh(role)
    seen: dict[State, list[int]] = {proto.state: [0]}
    for i in range(len(stream)):
        proto.receive_data(stream[i:i + 1], 1000)
        proto.take_output()
        seen.setdefault(proto.state, []).append(i + 1)
    return seen


def feed(role: str, prefix: bytes, tail: bytes, chunk: int = 0, eof: bool = False) -> Outcome:
    """A fresh machine of ``role``: clean ``prefix``, then ``tail`` (in ``chunk``-byte pieces), maybe EOF."""
    proto, acts = _fresh(role)
    out = Outcome(list(acts), [proto.state], proto=proto)
    out.actions += proto.receive_data(prefix, 1000)
    proto.take_output()
    out.states.append(proto.state)
    tracemalloc.start()
    try:
        step = chunk or max(1, len(tail))
        for i in range(0, len(tail), step):
            out.actions += proto.receive_data(tail[i:i + step], 2000)
            proto.take_output()
            out.states.append(proto.state)
        if eof:
            out.actions += proto.receive_data(b"", 3000)
            out.states.append(proto.state)
        out.peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out


def check(out: Outcome, what: str) -> None:
    """The invariant: typed errors, a clean fault, bounded allocation."""
    for f in out.faults:
        assert f.error is None or isinstance(f.error, MsgrError), f"{what}: untyped error {f.error!r}"
    if out.faults:
        st = out.proto.state
        assert st in (State.CLOSED, State.STANDBY, State.CONNECTING), f"{what}: faulted into {st!r}"
        assert not out.proto.is_connected(), what
    assert out.peak < ALLOC_LIMIT, f"{what}: allocated {out.peak} bytes"


def big_header(front: int = 0, middle: int = 0, data: int = 0, seq: int = 1) -> bytes:
    """TAG_MSG + a 53-byte header with a VALID crc claiming the given lengths."""
    from msgr.wire import MsgHeader
    h = MsgHeader(seq=seq, type=0x7F5E, front_len=front, middle_len=middle, data_len=data)
    return b"\x07" + h.pack()


def message_frame(proto, seq: int, front: bytes = b"x") -> bytes:
    """A well-formed frame for ``proto``'s negotiated features (to test seq rules)."""
    from msgr.protocol.outq import Framer
    m = Message()
    m.header.type = 0x7F5E
    m.front = front
    m.header.seq = seq
    out: list = []
    Framer(proto.features, True, True, EntityName.TYPE_OSD, 0).frame(m, out)
    return b"".join(bytes(b) for b in out)
