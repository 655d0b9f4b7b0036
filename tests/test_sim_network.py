"""The simulator itself: determinism from one seed, TCP-like byte order, faults, clock, endpoints
(each with 0, 1 and 3 simulated workers per endpoint)."""
from __future__ import annotations

import pytest

from msgr.entity import EntityName
from msgr.policy import Policy
from msgr.protocol.actions import ConnEvent
from msgr.protocol.states import State
from msgr.sim import NetParams, SimNetwork
from msgr.sim.chaos import make_message, parse_message, run_seed

OSD = EntityName.TYPE_OSD


@pytest.fixture(params=[0, 1, 3], ids=lambda w: f"workers={w}")
def workers(request) -> int:
    """Simulated workers per endpoint (msgr/sim/worker.py); 0: the model without workers."""
    return request.param


def _pair(seed=1, workers=0, **kw):
    net = SimNetwork(seed, trace=True, **kw)
    a = net.add_endpoint(EntityName.osd(0), policies={OSD: Policy.lossless_peer()}, workers=workers)
    b = net.add_endpoint(EntityName.osd(1), policies={OSD: Policy.lossless_peer()}, workers=workers)
    return net, a, b


def _send(net, a, b, n, front=100, data=0):
    c = a.connect_to(OSD, b.get_myaddr())
    for i in range(n):
        c.send_message(make_message(c.uid, i + 1, 127, front, data))
    return c


def _got(ep):
    return [parse_message(r.data)[1] for r in ep.records_of("deliver")]


def test_same_seed_same_run_and_other_seeds_differ(workers):
    traces = []
    for seed in (5, 5, 6):
        net, a, b = _pair(seed, workers)
        _send(net, a, b, 20, 3000, 9000)
        net.run_for(50_000)
        traces.append(net.trace)
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


def test_run_seed_replays_exactly():
    assert run_seed(123) == run_seed(123)


def test_bytes_arrive_whole_and_in_order_whatever_the_chunking(workers):
    params = NetParams(p_whole_write=0.0, p_tiny_chunks=0.5, recv_sizes=(1, 3, 7))
    net, a, b = _pair(3, workers, params=params)
    _send(net, a, b, 30, 50, 700)
    net.run_for(2_000_000)
    assert _got(b) == list(range(1, 31))
    assert net.stats["chunks"] > 100   # (with workers a burst of sends leaves in fewer writes)


def test_partition_stalls_and_heal_delivers_in_order(workers):
    net, a, b = _pair(4, workers)
    c = _send(net, a, b, 1)
    net.run_for(100_000)
    net.partition(a, b)
    for i in range(2, 6):
        c.send_message(make_message(c.uid, i, 127, 10))
    net.run_for(10_000_000)
    assert _got(b) == [1]
    net.heal()
    net.run_for(100_000)
    assert _got(b) == [1, 2, 3, 4, 5]


def test_connect_during_partition_times_out_and_retries(workers):
    net, a, b = _pair(8, workers)
    net.partition(a, b)
    c = _send(net, a, b, 2)
    net.run_for(20_000_000)
    assert not _got(b) and net.stats["timeouts"] >= 2 and c.proto.state is State.CONNECTING
    net.heal()
    net.run_for(40_000_000)
    assert _got(b) == [1, 2]


def test_reset_mid_stream_loses_nothing_on_a_lossless_session(workers):
    net, a, b = _pair(9, workers)
    c = _send(net, a, b, 10, 20_000, 50_000)
    net.run_for(1_500)
    net.reset_socket(net.live_sockets()[0])
    net.run_for(5_000_000)
    assert _got(b) == list(range(1, 11))
    assert net.stats["resets"] == 1 and a.records_of("fault") and c.proto.is_connected()


def test_restart_gives_a_new_nonce_and_a_session_reset(workers):
    net, a, b = _pair(10, workers)
    c = _send(net, a, b, 1)
    net.run_for(100_000)
    old = b.nonce
    b2 = net.restart("osd.1")
    assert b2.nonce != old and not b.alive and b2.get_myaddr().port == 6800
    c.send_message(make_message(c.uid, 2, 127, 10))   # wakes the idle session: it reconnects
    net.run_for(1_000_000)
    # the old session's peer is gone: connecting to the old address is refused by the handshake (nonce)
    assert any("nonce" in r.data[0] for r in a.records_of("fault", c.uid))
    c2 = a.connect_to(OSD, b2.get_myaddr())
    c2.send_message(make_message(c2.uid, 1, 127, 10))
    net.run_for(1_000_000)
    assert [parse_message(r.data)[0] for r in b2.records_of("deliver")] == [c2.uid]


def test_refused_connect_notifies_the_application(workers):
    net = SimNetwork(11)
    a = net.add_endpoint(EntityName.osd(0), policies={OSD: Policy.lossy_client()}, workers=workers)
    b = net.add_endpoint(EntityName.osd(1), listen=False, workers=workers)
    c = a.connect_to(OSD, b.get_myaddr().with_port(6800).with_ip(b.ip))
    net.run_for(1_000_000)
    assert ConnEvent.CONN_REFUSED in [r.data for r in a.records_of("notify", c.uid)]


def test_clock_runs_timers_in_order_and_never_backwards():
    net = SimNetwork(12)
    seen = []
    for d in (30, 10, 20, 10):
        net.call_later(d, lambda d=d: seen.append((d, net.now_us())))
    ev = net.call_later(15, lambda: seen.append("cancelled"))
    ev.cancel()
    net.run_until(25)
    assert seen == [(10, 10), (10, 10), (20, 20)] and net.now_us() == 25
    with pytest.raises(ValueError):
        net.clock.advance(-1)


def test_connection_race_ends_with_one_session_each_way(workers):
    net, a, b = _pair(13, workers)
    ca = a.connect_to(OSD, b.get_myaddr())
    cb = b.connect_to(OSD, a.get_myaddr())
    ca.send_message(make_message(ca.uid, 1, 127, 10))
    cb.send_message(make_message(cb.uid, 1, 127, 10))
    net.run_for(60_000_000)
    assert _got(a) == [1] and _got(b) == [1]
    assert len(a.conns) == 1 and len(b.conns) == 1
    assert not a.anomalies and not b.anomalies


def test_slow_dispatcher_with_small_throttle_backpressures_and_drains(workers):
    net = SimNetwork(14)
    from msgr.throttle import Throttle
    pol = Policy.lossless_peer()
    pol.throttler_messages = Throttle("m", 2)
    a = net.add_endpoint(EntityName.osd(0), policies={OSD: Policy.lossless_peer()}, workers=workers)
    b = net.add_endpoint(EntityName.osd(1), policies={OSD: pol}, dispatch_delay_us=(5_000, 5_000),
                         workers=workers)
    _send(net, a, b, 20, 100)
    for _ in range(50):
        net.run_for(2_000)
        assert pol.throttler_messages.current <= 2
    net.run_for(2_000_000)
    assert _got(b) == list(range(1, 21)) and pol.throttler_messages.current == 0
