"""The process-wide NetworkStack: messengers with equal ms_async_op_threads share workers,
refcounted (first start builds it, last wait stops it), with a private/caller-owned opt-out."""
from __future__ import annotations

import threading

from lossless_util import Cluster, Tagged, check_exact, live_sessions, wait_for

from eventcenter import NetworkStack
from msgr import Config, EntityName, Policy
from msgr.messenger import Messenger, shared_stacks

OSD = EntityName.TYPE_OSD
# worker counts no other test module uses, so the shared stack of each test is its own
N3, N4 = 3, 4


def _threads(prefix: str = "msgr-worker") -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(prefix)}


def _exchange(cluster, cfg_s: Config, cfg_c: Config, n: int = 20, nonce: int = 0):
    s, rs = cluster.make(EntityName.osd(0), 5100 + nonce, cfg_s, Policy.lossless_peer())
    c, rc = cluster.make(EntityName.osd(1), 5200 + nonce, cfg_c, Policy.lossless_peer())
    conn = c.connect_to(OSD, s.get_myaddr())
    for i in range(n):
        conn.send_message(Tagged(1, 0, i))
    wait_for(lambda: rs.n(1) == n, what=f"{n} messages")
    check_exact(rs.ids(1), range(n))
    (srv,) = live_sessions(s, c.get_myaddr())
    return s, c, conn, srv, rs


def test_messengers_with_equal_thread_counts_share_one_worker(cluster):
    before = _threads()
    s, c, conn, srv, rs = _exchange(cluster, Config(ms_async_op_threads=N3), Config(ms_async_op_threads=N3))
    assert shared_stacks.references(N3) == 2
    assert s._stack is c._stack
    assert len(_threads() - before) == N3            # not 2 x N3
    # one connection each on the least-loaded worker: the client's and the server's end differ
    assert conn._worker is not srv._worker
    assert conn._worker in s._stack.workers and srv._worker in s._stack.workers


def test_single_worker_runs_both_ends_on_one_thread(cluster):
    s, c, conn, srv, rs = _exchange(cluster, Config(ms_async_op_threads=1), Config(ms_async_op_threads=1))
    assert conn._worker is srv._worker


def test_connections_spread_over_the_least_loaded_workers(cluster):
    cfg = Config(ms_async_op_threads=2 * N3)
    servers = [cluster.make(EntityName.osd(i), 5300 + i, cfg)[0] for i in range(2 * N3)]
    c, _ = cluster.make(EntityName.client(9), 5400, cfg, Policy.lossless_client(), bind=None)
    conns = [c.connect_to(OSD, s.get_myaddr()) for s in servers]
    wait_for(lambda: all(x.is_connected() for x in conns), what="all connected")
    stack = c._stack
    # 2*N3 client ends + 2*N3 accepted ends over 2*N3 workers: two each
    wait_for(lambda: sorted(w.references for w in stack.workers) == [2] * (2 * N3),
             what="two connections per worker", detail=lambda: f"{stack.workers}")
    assert all(x._worker in stack.workers for x in conns)


def test_last_wait_stops_the_stack_and_start_again_works(cluster):
    cfg = Config(ms_async_op_threads=N4)
    before = _threads()
    s, c, conn, srv, rs = _exchange(cluster, cfg, cfg, nonce=1)
    stack = s._stack
    cluster.stop(c)
    # the other messenger still runs on it; the stopped one left no connection behind on the workers
    assert shared_stacks.references(N4) == 1 and stack.running
    assert conn._closed and conn._sock is None and not c.connections()
    wait_for(lambda: sum(w.references for w in stack.workers) == len([x for x in s.connections()
                                                                      if not x._closed]),
             what="worker references = the server's live connections only",
             detail=lambda: f"{stack.workers} {s.connections()}")
    cluster.stop(s)
    assert shared_stacks.references(N4) == 0 and not stack.running
    wait_for(lambda: not (_threads() - before), what="worker threads gone")
    # restart both: a fresh shared stack, messages flow again
    s.start()
    c.start()
    assert s._stack is c._stack and s._stack is not stack
    conn2 = c.connect_to(OSD, s.get_myaddr())
    assert conn2 is not conn
    for i in range(5):
        conn2.send_message(Tagged(1, 1, i))
    wait_for(lambda: rs.n(1, 1) == 5, what="messages after restart")
    check_exact(rs.ids(1, 1), range(5))
    cluster.all += [s, c]


def test_wait_while_the_peer_keeps_the_stack_leaves_no_timer_or_socket(cluster):
    cfg = Config(ms_async_op_threads=1)
    s, c, conn, srv, rs = _exchange(cluster, cfg, cfg, nonce=2)
    center = conn._worker.center
    cluster.stop(s)
    assert srv._closed and srv._sock is None and not srv._timers and srv._tick_timer is None
    assert srv not in s.connections()
    # the surviving client faults and (lossless) keeps retrying on the shared worker
    wait_for(lambda: conn._fault_count >= 1, what="client saw the server go")
    assert center is c._stack.workers[0].center and not center.closed


def test_private_stack_opt_out(cluster):
    cfg = Config(ms_async_op_threads=N3, ms_async_shared_stack=False)
    s, c, conn, srv, rs = _exchange(cluster, cfg, cfg, nonce=3)
    assert s._stack is not c._stack
    assert shared_stacks.references(N3) == 0
    stack = s._stack
    cluster.stop(s)
    assert not stack.running


def test_caller_owned_stack_is_used_and_left_running():
    stack = NetworkStack(num_workers=2)
    cl = Cluster()
    try:
        a = Messenger.create(EntityName.osd(0), nonce=5500, config=Config(), stack=stack)
        a.start()
        assert a._stack is stack and stack.running
        a.shutdown()
        a.wait()
        assert stack.running                      # the caller stops it
        a.start()                                 # and the messenger can use it again
        assert a._stack is stack
        a.shutdown()
        a.wait()
    finally:
        cl.close()
        stack.stop()
    assert not stack.running


def test_fast_preprocess_runs_on_the_worker_for_network_messages(cluster):
    """Ceph calls ms_fast_preprocess for every received message, fast-dispatched or queued."""
    from msgr import Dispatcher

    class Pre(Dispatcher):
        def __init__(self) -> None:
            self.seen: list[tuple[int, str]] = []

        def ms_fast_preprocess(self, msg) -> None:
            self.seen.append((msg.ident if hasattr(msg, "ident") else -1, threading.current_thread().name))

    s, rs = cluster.make(EntityName.osd(0), 5600, Config(), Policy.lossless_peer())
    pre = Pre()
    s.add_dispatcher_head(pre)
    c, _ = cluster.make(EntityName.osd(1), 5601, Config(), Policy.lossless_peer())
    conn = c.connect_to(OSD, s.get_myaddr())
    for i in range(5):
        conn.send_message(Tagged(1, 0, i))
    wait_for(lambda: rs.n(1) == 5, what="5 messages")
    assert len(pre.seen) == 5
    assert all(name.startswith("msgr-worker") for _i, name in pre.seen)
