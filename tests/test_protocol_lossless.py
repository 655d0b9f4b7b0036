"""Lossless reliability through the WireNet harness: faults, reconnects, resets, standby, races."""
from __future__ import annotations

import pytest
from test_protocol_support import make_msg, msg_id, traffic_with_breaks

from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.protocol.actions import ConnEvent, Discarded, Notify, OpenSocket, SessionClosed, TimerKind
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet

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
    n = 2000
    assert traffic_with_breaks(net, p, b, A_ADDR, n, every=40) >= 5
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
    delays = [e.delay_us for e in evs if type(e).__name__ == "ArmTimer" and e.kind is TimerKind.RECONNECT]
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


# --- ms_connection_ready_timeout (Ceph's connection tick while not yet OPEN) ---------------------------------------
from msgr.config import Config  # noqa: E402
from msgr.protocol.actions import ArmTimer, CancelTimer, CloseSocket, Fault  # noqa: E402
from msgr.protocol.protocol_v1 import ProtocolV1  # noqa: E402

READY = TimerKind.CONNECTION_READY
SOCK = EntityAddr.parse("v1:10.0.0.1:40001/0")


def _lone(policy, **cfg):
    host = FakeHost(EntityName.osd(1), A_ADDR, Config(**cfg), default_policy=policy, seed=1)
    return ProtocolV1(host), host


def test_client_handshake_that_never_completes_faults_after_the_ready_timeout_and_backs_off():
    p, _ = _lone(Policy.lossless_peer(), ms_connection_ready_timeout=3.0, ms_initial_backoff=0.2)
    acts = p.start_connect(B_ADDR, 4, 0)
    assert ArmTimer(READY, 3_000_000) in acts and OpenSocket(B_ADDR) in acts
    p.on_connected(SOCK, 1000)
    p.send_message(make_msg(0), 1000)            # queued: a fault backs off rather than standing by
    assert p.on_timer(READY, 2_999_999) == [ArmTimer(READY, 1)]   # an early tick waits for the rest
    acts = p.on_timer(READY, 3_000_000)
    assert any(isinstance(a, Fault) and "ms_connection_ready_timeout" in a.reason for a in acts)
    assert CloseSocket in [type(a) for a in acts] and ArmTimer(TimerKind.RECONNECT, 200_000) in acts
    assert p.state is State.CONNECTING and p.stats["faults"] == 1
    assert p.on_timer(READY, 3_100_000) == []    # backing off: nothing in flight to time out
    acts = p.on_timer(TimerKind.RECONNECT, 3_200_000)
    assert acts == [ArmTimer(READY, 3_000_000), OpenSocket(B_ADDR)]   # the next attempt gets its own


def test_tcp_connect_that_never_completes_is_abandoned_after_the_ready_timeout():
    p, _ = _lone(Policy.lossless_peer(), ms_initial_backoff=0.2)
    p.start_connect(B_ADDR, 4, 0)
    p.send_message(make_msg(0), 0)
    acts = p.on_timer(READY, 10_000_000)           # default 10 s; on_connected never came
    assert [type(a) for a in acts][:2] == [CloseSocket, Fault]
    assert ArmTimer(TimerKind.RECONNECT, 200_000) in acts and p.state is State.CONNECTING
    assert p.on_connected(SOCK, 10_000_001) == [] and p.state is State.CONNECTING   # late completion ignored


def test_half_accepted_connection_closes_after_the_ready_timeout():
    p, host = _lone(Policy.lossless_peer())
    assert p.start_accept(SOCK, A_ADDR, 0) == [ArmTimer(READY, 10_000_000)]
    acts = p.on_timer(READY, 10_000_000)
    assert p.state is State.CLOSED and SessionClosed in [type(a) for a in acts]
    assert Notify(ConnEvent.BAD_RESET) not in acts and CloseSocket in [type(a) for a in acts]


def test_ready_timer_is_cancelled_on_open_and_a_stale_tick_is_ignored():
    net = WireNet(seed=5)
    a, b = _hosts(net, Policy.lossless_peer())
    p = net.connect(a, B_ADDR, 4)
    net.send(p, make_msg(0))
    net.run()
    s = b.conns[A_ADDR]
    assert p.is_connected() and s.is_connected() and _ids(net, b) == [0]
    for proto in (p, s):
        kinds = [(type(e), e.kind) for e in net.events(proto) if isinstance(e, (ArmTimer, CancelTimer))]
        assert kinds[-1] == (CancelTimer, READY) and (ArmTimer, READY) in kinds
        assert proto.on_timer(READY, net.now_us + 60_000_000) == [] and proto.is_connected()


def test_ready_timeout_zero_disables_the_timer():
    p, _ = _lone(Policy.lossless_peer(), ms_connection_ready_timeout=0)
    acts = p.start_connect(B_ADDR, 4, 0)
    assert OpenSocket(B_ADDR) in acts and not any(isinstance(a, ArmTimer) for a in acts)
    p.on_connected(SOCK, 0)
    assert p.on_timer(READY, 10**9) == [] and p.state is State.CONNECTING_WAIT_BANNER_AND_IDENTIFY


def test_stalled_handshake_through_a_partition_recovers_by_the_ready_timeout():
    """The server's banner never arrives (partition right after the TCP connect): before the timeout
    existed, this attempt sat until ms_connection_idle_timeout (900 s)."""
    from msgr.sim.chaos import make_message, parse_message
    from msgr.sim.network import SimNetwork
    net = SimNetwork(11)
    cfg = dict(ms_initial_backoff=0.05, ms_max_backoff=1.0, ms_connection_ready_timeout=2.0)
    pol = {EntityName.TYPE_OSD: Policy.lossless_peer()}
    ea = net.add_endpoint(EntityName.osd(0), Config(**cfg), policies=pol)
    eb = net.add_endpoint(EntityName.osd(1), Config(**cfg), policies=pol)
    c = ea.connect_to(EntityName.TYPE_OSD, eb.get_myaddr())
    c.send_message(make_message(1, 1, 127))
    net.run_until(net.now_us() + 1)
    while c.proto.state is State.CONNECTING:       # until the TCP connect completes
        net.step()
    net.partition(ea, eb)
    net.run_for(2_500_000)                           # the handshake bytes stall: the timeout fires
    assert any("ms_connection_ready_timeout" in r.data[0] for r in ea.records_of("fault"))
    net.heal()
    net.run_for(5_000_000)
    assert [parse_message(r.data) for r in eb.records_of("deliver")] == [(1, 1)]
    assert c.is_connected()


# --- a replace whose socket dies before adopt_socket runs (the 15 s WAIT stall) -----------------------------
def test_adopt_failed_clears_replacing_and_reconnects_like_a_fault_on_the_adopted_socket():
    p, _ = _lone(Policy.lossless_peer(), ms_initial_backoff=0.2)
    p.start_connect(B_ADDR, 4, 0)
    p.send_message(make_msg(0), 0)
    p.state = State.WAIT                              # as after a WAIT reply: backing off ms_max_backoff
    p._fault("peer answered WAIT", 0)
    assert p.state is State.CONNECTING and p._reconnect_armed
    p._replacing = True                               # the accept side chose REPLACE; ReplaceExisting is queued
    cseq = p.connect_seq
    acts = p.adopt_failed("the socket to adopt died", 1000)
    assert not p._replacing and CancelTimer(TimerKind.RECONNECT) in acts
    # Ceph: the dead socket faults in ACCEPTING on a session with a queue -> reconnect now, cseq + 1
    p2, _ = _lone(Policy.lossless_peer())
    assert OpenSocket(B_ADDR) in acts and p.connect_seq == cseq + 1 and p.state is State.CONNECTING
    assert p.adopt_failed("again", 2000) == [] and p2.adopt_failed("not replacing", 0) == []


def test_every_lossless_fault_ends_reset_from_peer():
    """Row 14's "reset from peer" answers READY (in_seq 0) on the open() of that one replace. Any fault
    before it ends the mark, as Ceph's fault() does, so a later ordinary open() still answers SEQ."""
    for how in ("socket error", "ready timeout", "adopt failed"):
        p, _ = _lone(Policy.lossless_peer())
        p.start_connect(B_ADDR, 4, 0)
        p.send_message(make_msg(0), 0)
        p._replacing = True                              # the accept side chose REPLACE with reset_from_peer
        if how == "adopt failed":
            p.adopt_failed("the socket to adopt died", 100, reset_session=True)
        else:
            p.adopt_socket(SOCK, A_ADDR, 100, reset_session=True)
            assert p._reset_from_peer and p.state is State.ACCEPTING_WAIT_CONNECT_MSG
            if how == "socket error":
                p.on_socket_error("connection reset by peer", 200)
            else:
                p.on_timer(READY, 10_000_100)
        assert not p._reset_from_peer and not p._replacing, how
        assert p.state is State.CONNECTING and p.connect_seq == 1, how
