"""Lossless reliability through the WireNet harness: faults, reconnects, resets, standby, races."""
from __future__ import annotations

import pytest

from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.protocol.actions import Discarded, Notify, ConnEvent, OpenSocket, SessionClosed
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet

from test_protocol_support import make_msg, msg_id

A_ADDR = EntityAddr.parse("v1:10.0.0.1:6800/11")
B_ADDR = EntityAddr.parse("v1:10.0.0.2:6800/22")


def _hosts(net, pol_a, pol_b=None):
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, default_policy=pol_a, seed=1))
    b = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, default_policy=pol_b or pol_a.copy(), seed=2))
    return a, b


def _ids(net, host):
    return [msg_id(m) for m in net.messages(host)]


@pytest.mark.parametrize("seed", range(6))
def test_fault_in_the_middle_of_traffic_delivers_exactly_once_in_order(seed):
    net = WireNet(seed=seed, max_chunk=3000)
    a, b = _hosts(net, Policy.lossless_peer())
    p = net.connect(a, B_ADDR, 4)
    n, breaks = 2000, 0
    for i in range(n):
        net.send(p, make_msg(i, data_len=net.rng.choice([0, 10, 5000])))
        s = b.conns.get(A_ADDR)
        if s is not None:
            net.send(s, make_msg(i))
        if i % 40 == 0:
            for _ in range(net.rng.randint(1, 25)):
                net.step()
            if net.rng.random() < 0.5 and net.break_link(p):
                breaks += 1
    net.run()
    assert breaks >= 5
    assert _ids(net, b) == list(range(n))
    s = b.conns[A_ADDR]
    got_a = _ids(net, a)
    assert got_a == sorted(set(got_a)) and len(got_a) == len(set(got_a))
    assert p.stats["reconnects"] >= 1 and p.is_connected() and s.is_connected()
    assert not p._outq.sent and not len(p._outq)


def test_server_policy_waits_in_standby_and_client_reconnects_with_higher_connect_seq():
    net = WireNet(seed=3)
    a, b = _hosts(net, Policy.lossless_client(), Policy.stateful_server())
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run()
    s = b.conns[A_ADDR]
    cseq = p.connect_seq
    net.send(s, make_msg(100))      # queued on the server side, then the link dies before it is acked
    net.break_link(p)
    net.send(p, make_msg(1))
    net.run()
    assert s.state is State.OPEN and p.connect_seq > cseq
    assert _ids(net, b) == [0, 1] and _ids(net, a) == [100]


def test_peer_restart_resetsession_reports_remote_reset_and_discarded():
    net = WireNet(seed=4)
    a, b = _hosts(net, Policy.lossless_peer_reuse())
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run()
    assert p.connect_seq == 1
    # B restarts (same address and nonce, no session state); A's queued message cannot be delivered
    b2 = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, default_policy=Policy.lossless_peer_reuse(), seed=9))
    net.break_link(p)
    net.send(p, make_msg(1))
    net.run()
    evs = net.events(p)
    assert Notify(ConnEvent.BAD_REMOTE_RESET) in evs
    (disc,) = [e for e in evs if isinstance(e, Discarded)]
    assert [msg_id(m) for m in disc.messages] == [1]
    assert p.is_connected() and p.connect_seq == 1 and b2.conns[A_ADDR].is_connected()
    net.send(p, make_msg(2))
    net.run()
    assert _ids(net, b2) == [2]


def test_lossy_fault_is_bad_reset_and_no_reconnect():
    net = WireNet(seed=5)
    a, b = _hosts(net, Policy.lossy_client(), Policy.stateless_server())
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run()
    opens = len(net.events(p, OpenSocket))
    net.break_link(p)
    net.run()
    evs = net.events(p)
    assert Notify(ConnEvent.BAD_RESET) in evs and any(isinstance(e, SessionClosed) for e in evs)
    assert p.state is State.CLOSED and len(net.events(p, OpenSocket)) == opens and not a.conns
    acts = p.send_message(make_msg(1), 0)
    assert isinstance(acts[0], Discarded)


def test_standby_reconnects_on_send_only():
    net = WireNet(seed=6)
    a, b = _hosts(net, Policy.lossless_peer())
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run()
    opens = len(net.events(p, OpenSocket))
    net.break_link(p)
    net.run()
    assert p.state is State.STANDBY and len(net.events(p, OpenSocket)) == opens
    net.now_us += 60_000_000
    net.run()
    assert p.state is State.STANDBY
    net.send(p, make_msg(1))
    net.run()
    assert len(net.events(p, OpenSocket)) == opens + 1 and p.is_connected()
    assert _ids(net, b) == [0, 1]


def test_refused_connection_notifies_and_backs_off_doubling():
    net = WireNet(seed=7)
    a = net.add_host(FakeHost(EntityName.osd(1), A_ADDR, default_policy=Policy.lossless_peer()))
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run(max_time_us=2_000_000)
    evs = net.events(p)
    assert Notify(ConnEvent.CONN_REFUSED) in evs
    delays = [e.delay_us for e in evs if type(e).__name__ == "ArmTimer"]
    assert delays[:4] == [200_000, 400_000, 800_000, 1_600_000]
    b = net.add_host(FakeHost(EntityName.osd(2), B_ADDR, default_policy=Policy.lossless_peer()))
    net.run()
    assert _ids(net, b) == [0]


@pytest.mark.parametrize("seed", range(30))
def test_simultaneous_connect_ends_with_one_session(seed):
    net = WireNet(seed=seed, max_chunk=net_chunk(seed))
    a, b = _hosts(net, Policy.lossless_peer())
    pa = net.connect(a, B_ADDR, 4)
    pb = net.connect(b, A_ADDR, 4)
    for i in range(30):
        net.send(pa, make_msg(i))
        net.send(pb, make_msg(1000 + i))
    net.run()
    assert a.conns[B_ADDR] is pa and b.conns[A_ADDR] is pb      # one session object per side, kept
    assert pa.is_connected() and pb.is_connected()
    assert _ids(net, b) == list(range(30)) and _ids(net, a) == list(range(1000, 1030))
    live = [p for p in net.protos if p.is_connected()]
    assert sorted(map(id, live)) == sorted([id(pa), id(pb)])


def net_chunk(seed: int) -> int:
    return [1, 7, 100, 65536][seed % 4]
