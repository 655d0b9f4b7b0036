"""ProtocolV1 keeps its attributes in slots (protocol_v1.py, ``__slots__``): a session that went
through the handshake, OPEN traffic (small and large messages, keepalives) and reconnects has set
nothing outside them. An attribute added without its slot still works, from the instance dict, but
costs every session a dict (and every read of it a hashed lookup): this test names it."""
from __future__ import annotations

from test_protocol_support import make_msg, traffic_with_breaks

from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet

A_ADDR = EntityAddr.parse("v1:10.0.0.1:6800/11")
B_ADDR = EntityAddr.parse("v1:10.0.0.2:6800/22")


def _outside_slots(p: ProtocolV1) -> list[str]:
    return sorted(vars(p))


def test_a_session_sets_only_its_slots() -> None:
    net = WireNet(seed=5, max_chunk=3000)
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, default_policy=Policy.lossless_peer(), seed=1))
    b = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, default_policy=Policy.lossless_peer(), seed=2))
    p = net.connect(a, B_ADDR, 4)
    assert traffic_with_breaks(net, p, b, A_ADDR, 400, every=40) >= 3
    for i in range(5):   # large segments (read into their own buffers) and a keepalive
        net.send(p, make_msg(1000 + i, data_len=300_000, middle_len=10))
    net.apply(p, p.send_keepalive(net.now_us))
    net.run()
    s = b.conns[A_ADDR]
    assert p.is_connected() and s.is_connected() and p.stats["reconnects"] >= 1
    assert _outside_slots(p) == [] and _outside_slots(s) == []


def test_a_stand_in_attribute_still_works() -> None:
    net = WireNet(seed=1)
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, default_policy=Policy.lossy_client(), seed=1))
    p = ProtocolV1(a)
    p.test_stand_in = 1   # type: ignore[attr-defined]
    assert _outside_slots(p) == ["test_stand_in"]


def test_a_real_session_sets_only_its_slots() -> None:
    """Both ends of a messenger session (connection and protocol), after traffic, a flush, a
    keepalive wait and a fault that reconnects."""
    from test_messenger_loopback import Collector, MTest, wait_for

    from msgr import Config, Messenger

    made = []
    try:
        for i in range(2):
            ms = Messenger.create(EntityName.osd(i), nonce=3000 + i, config=Config())
            ms.set_default_policy(Policy.lossless_peer())
            ms.add_dispatcher_tail(Collector())
            ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
            ms.start()
            made.append(ms)
        cli, srv = made
        conn = cli.connect_to(EntityName.TYPE_OSD, srv.get_myaddr())
        for i in range(20):
            conn.send_message(MTest(i, data=b"x" * (i * 5000)))
        conn.send_keepalive()
        wait_for(lambda: conn.get_last_keepalive_ack() != (0, 0), what="keepalive ack")
        wait_for(lambda: len(srv._conns) == 1, what="accepted session")
        accepted = next(iter(srv._conns.values())).connection
        for c in (conn, accepted):
            assert sorted(vars(c)) == [] and _outside_slots(c._proto) == []
    finally:
        for ms in made:
            ms.shutdown()
        for ms in made:
            ms.wait()
