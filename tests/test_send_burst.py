"""``ProtocolV1.send_messages`` (a burst handed over in one call, as AsyncConnection does with the
messages other threads queued) behaves as ``send_message`` once per message, in order: the same
wire bytes, queue order by priority, a reconnect from STANDBY, one Discarded when closed."""
from __future__ import annotations

from test_protocol_support import make_msg, msg_id

from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.protocol.actions import Discarded, OpenSocket
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet

A_ADDR = EntityAddr.parse("v1:10.0.0.1:6800/11")
B_ADDR = EntityAddr.parse("v1:10.0.0.2:6800/22")


def _open_pair():
    net = WireNet(seed=3)
    pol = Policy.lossless_peer()
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, default_policy=pol, seed=1))
    b = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, default_policy=pol.copy(), seed=2))
    p = net.connect(a, B_ADDR, EntityName.TYPE_OSD)
    net.run(until=p.is_connected)
    return net, a, b, p


_PRIOS = [0, 127, 196, 127, 63, 0, 196, 64]


def _burst():
    return [make_msg(i, data_len=i * 50, prio=prio) for i, prio in enumerate(_PRIOS)]


def _send(how: str) -> bytes:
    net, a, b, p = _open_pair()
    msgs = _burst()
    if how == "each":
        acts = [act for m in msgs for act in p.send_message(m, 0)]
    else:
        acts = p.send_messages(msgs, 0)
    assert acts == []
    assert [m.header.priority for m in msgs] == [127 if x == 0 else x for x in _PRIOS]
    assert [msg_id(m) for m in p._outq.queued()] == [2, 6, 0, 1, 3, 5, 7, 4]
    wire = b"".join(bytes(x) for x in p.take_output())
    assert sorted(m.header.seq for m in msgs) == list(range(1, 9))
    return wire


def test_a_burst_goes_out_as_message_by_message_sends_would():
    each, burst = _send("each"), _send("burst")
    assert each == burst and len(each) > 8 * (54 + 8 + 21)


def test_a_burst_is_delivered_in_priority_order():
    net, a, b, p = _open_pair()
    net.apply(p, p.send_messages(_burst(), net.now_us))
    net.run()
    assert [msg_id(m) for m in net.messages(b)] == [2, 6, 0, 1, 3, 5, 7, 4]


def test_a_burst_wakes_a_standby_session_once():
    net, a, b, p = _open_pair()
    net.send(p, make_msg(100))
    net.run()
    opens = len(net.events(p, OpenSocket))
    net.break_link(p)
    net.run()
    assert p.state is State.STANDBY
    acts = p.send_messages([make_msg(101), make_msg(102)], net.now_us)
    net.apply(p, acts)
    net.run()
    assert len(net.events(p, OpenSocket)) == opens + 1 and p.is_connected()
    assert [msg_id(m) for m in net.messages(b)] == [100, 101, 102]


def test_a_burst_to_a_closed_session_is_one_discard_of_all_of_it():
    net, a, b, p = _open_pair()
    net.apply(p, p.mark_down(net.now_us))
    assert p.state is State.CLOSED
    msgs = [make_msg(i) for i in range(3)]
    acts = p.send_messages(msgs, net.now_us)
    assert acts == [Discarded(tuple(msgs))]
