"""The simulator's workers (msgr/sim/worker.py): placement, FIFO per worker, seeded interleaving."""
from __future__ import annotations

import pytest

from msgr.entity import EntityName
from msgr.policy import Policy
from msgr.protocol.states import State
from msgr.sim import SimNetwork
from msgr.sim.chaos import make_message, parse_message, run_seed
from msgr.sim.worker import SimWorker, pick_worker

OSD = EntityName.TYPE_OSD


def _pair(seed: int, workers: int, policy=Policy.lossless_peer):
    net = SimNetwork(seed, trace=True)
    a = net.add_endpoint(EntityName.osd(0), policies={OSD: policy()}, workers=workers)
    b = net.add_endpoint(EntityName.osd(1), policies={OSD: policy()}, workers=workers)
    return net, a, b


def test_posts_to_one_worker_run_in_order_in_turns():
    net = SimNetwork(1)
    w = SimWorker(net, "w")
    seen: list[str] = []
    for k in "abc":
        w.post(lambda k=k: seen.append(k), k)
    w.post(lambda: w.post(lambda: seen.append("later"), "later"), "posts during the turn")
    net.step()   # one turn: what was queued when it began
    assert seen == ["a", "b", "c"] and w.queued() == 1
    net.run_for(1_000)
    assert seen == ["a", "b", "c", "later"] and w.queued() == 0


def test_the_seed_interleaves_the_turns_of_two_workers():
    orders = set()
    for seed in range(40):
        net = SimNetwork(seed)
        w1, w2 = SimWorker(net, "w1"), SimWorker(net, "w2")
        seen: list[str] = []
        w1.post(lambda s=seen: s.append("1"), "1")
        w2.post(lambda s=seen: s.append("2"), "2")
        net.run_for(1_000)
        orders.add("".join(seen))
    assert orders == {"12", "21"}


def test_a_stopped_worker_runs_nothing():
    net = SimNetwork(2)
    w = SimWorker(net, "w")
    seen: list[int] = []
    w.post(lambda: seen.append(1), "x")
    w.stop()
    net.run_for(1_000)
    assert seen == [] and w.queued() == 0


def test_placement_is_least_loaded():
    net = SimNetwork(3)
    ws = [SimWorker(net, f"w{i}") for i in range(3)]
    picked = [pick_worker(net, ws) for _ in range(6)]
    assert sorted(w.references for w in ws) == [2, 2, 2]
    assert len(set(map(id, picked[:3]))) == 3


def test_connections_spread_over_workers_and_give_them_back():
    net, a, b = _pair(4, workers=2)
    c = a.connect_to(OSD, b.get_myaddr())
    c.send_message(make_message(c.uid, 1, 127, 10))
    net.run_for(100_000)
    (accepted,) = b.connections()
    assert c.worker in a.workers and accepted.worker in b.workers
    assert sum(w.references for w in a.workers) == 1 and sum(w.references for w in b.workers) == 1
    c.mark_down()
    net.run_for(100_000)
    assert sum(w.references for w in a.workers) == 0   # b keeps its lossless session (and its worker)


def test_application_sends_wait_for_the_worker_and_keep_their_order():
    net, a, b = _pair(5, workers=1)
    c = a.connect_to(OSD, b.get_myaddr())
    for n in range(1, 6):
        c.send_message(make_message(c.uid, n, 127, 10))
    # the protocol started in connect_to (as AsyncMessenger's); its TCP connect and the sends wait
    assert c.proto.state is State.CONNECTING and net.stats["connects"] == 0
    net.run_for(1_000_000)
    assert [parse_message(r.data)[1] for r in b.records_of("deliver")] == [1, 2, 3, 4, 5]


def test_sends_posted_to_a_session_that_closes_first_are_reported():
    net, a, b = _pair(6, workers=1, policy=Policy.lossy_client)
    c = a.connect_to(OSD, b.get_myaddr())
    net.run_for(100_000)
    assert c.is_connected()
    net.reset_socket(net.live_sockets()[0])                # its error event comes before any turn
    c.send_message(make_message(c.uid, 1, 127, 10))        # posted: the lossy session ends first
    net.run_for(100_000)
    (rec,) = a.records_of("discarded", c.uid)
    assert [parse_message(m) for m in rec.data] == [(c.uid, 1)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_same_seed_same_run_with_workers(workers):
    traces = []
    for seed in (7, 7, 8):
        net, a, b = _pair(seed, workers)
        ca, cb = a.connect_to(OSD, b.get_myaddr()), b.connect_to(OSD, a.get_myaddr())
        for n in range(1, 20):
            ca.send_message(make_message(ca.uid, n, 127, 100))
            cb.send_message(make_message(cb.uid, n, 127, 100))
        net.run_for(2_000_000)
        traces.append(net.trace)
        assert len(b.records_of("deliver")) == 19 and len(a.records_of("deliver")) == 19
    assert traces[0] == traces[1] and traces[0] != traces[2]
    assert run_seed(11, workers=workers) == run_seed(11, workers=workers)
