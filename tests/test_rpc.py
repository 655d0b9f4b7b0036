"""msgr.rpc: replies matched to requests by tid, futures failed with typed errors on
timeout, reset, remote reset, discard and close; nothing left pending afterwards.

Real messengers over loopback TCP; waits have deadlines that only turn a hang into a failure.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, wait

import pytest
from test_flush import socket_nobody_listens_on
from test_messenger_loopback import MTest, wait_for

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy, RpcClient, reply_to
from msgr.errors import ConnectionReset, RemoteReset, RequestAborted, RequestDiscarded, RequestFailed, RequestTimeout

OSD = EntityName.TYPE_OSD


class MReply(MTest):
    TYPE = 0x7E51


class Echo(Dispatcher):
    """Answers MTest(n) with MReply(n + 1000), except idents in ``ignore``."""

    def __init__(self) -> None:
        self.ignore: set[int] = set()
        self.seen: list[int] = []

    def ms_dispatch(self, msg) -> bool:
        if type(msg) is not MTest:
            return False
        self.seen.append(msg.ident)
        if msg.ident not in self.ignore:
            reply_to(msg, MReply(msg.ident + 1000))
        return True


@pytest.fixture
def world():
    made: list = []

    def make(name: EntityName, nonce: int, policy: Policy, *dispatchers, bind: bool = True, **cfg):
        ms = Messenger.create(name, nonce=nonce, config=Config(ms_initial_backoff=0.02, ms_max_backoff=0.2,
                                                                **cfg))
        ms.set_default_policy(policy)
        for d in dispatchers:
            ms.add_dispatcher_tail(d)
        if bind:
            ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
        ms.start()
        made.append(ms)
        return ms
    yield make
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


@pytest.mark.parametrize("fast", [False, True], ids=["dispatch-thread", "fast"])
def test_many_concurrent_requests_get_their_own_replies(world, fast) -> None:
    echo = Echo()
    server = world(EntityName.osd(0), 201, Policy.stateless_server(), echo)
    rpc = RpcClient(timeout=30, fast=fast)
    client = world(EntityName.client(1), 202, Policy.lossy_client(), rpc, bind=False)
    conn = client.connect_to(OSD, server.get_myaddr())
    futs = [rpc.call(conn, MTest(i)) for i in range(300)]
    replies = [f.result(timeout=30) for f in futs]
    assert [r.ident for r in replies] == [i + 1000 for i in range(300)]
    assert [r.tid for r in replies] == list(range(1, 301))
    assert len(rpc) == 0


def test_timeout_fails_the_future_and_forgets_the_request(world) -> None:
    echo = Echo()
    echo.ignore = {7}
    server = world(EntityName.osd(0), 211, Policy.stateless_server(), echo)
    rpc = RpcClient()
    client = world(EntityName.client(1), 212, Policy.lossy_client(), rpc, bind=False)
    conn = client.connect_to(OSD, server.get_myaddr())
    slow = rpc.call(conn, MTest(7), timeout=0.2)
    ok = rpc.call(conn, MTest(8), timeout=30)
    with pytest.raises(RequestTimeout) as info:
        slow.result(timeout=30)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RequestFailed)
    assert info.value.connection is conn and info.value.request.ident == 7
    assert ok.result(timeout=30).ident == 1008
    assert len(rpc) == 0


def test_lossy_reset_fails_waiting_requests_with_connection_reset(world) -> None:
    echo = Echo()
    echo.ignore = {1, 2}
    server = world(EntityName.osd(0), 221, Policy.stateless_server(), echo)
    rpc = RpcClient()
    client = world(EntityName.client(1), 222, Policy.lossy_client(), rpc, bind=False)
    conn = client.connect_to(OSD, server.get_myaddr())
    futs = [rpc.call(conn, MTest(i)) for i in (1, 2)]
    wait_for(lambda: len(echo.seen) == 2, what="the requests to arrive")
    server.mark_down_all()                      # the peer drops us: our lossy session resets
    for f in futs:
        with pytest.raises(ConnectionReset):
            f.result(timeout=30)
    assert len(rpc) == 0


def test_remote_reset_fails_requests_the_restarted_peer_forgot(world) -> None:
    echo = Echo()
    echo.ignore = {1}
    server = world(EntityName.osd(0), 231, Policy.lossless_peer(), echo)
    rpc = RpcClient()
    client = world(EntityName.osd(1), 232, Policy.lossless_peer(), rpc)
    conn = client.connect_to(OSD, server.get_myaddr())
    sent = rpc.call(conn, MTest(1))
    wait_for(lambda: echo.seen == [1], what="the request to arrive")
    assert conn.flush(timeout=30)
    server.shutdown()
    server.wait()
    unsent = rpc.call(conn, MTest(2))           # queued while the peer is away
    server.start()                              # back, without the session: RESETSESSION
    with pytest.raises(RemoteReset):
        sent.result(timeout=30)
    with pytest.raises((RequestDiscarded, RemoteReset)):
        unsent.result(timeout=30)
    assert len(rpc) == 0


def test_discarded_request_fails_with_request_discarded(world) -> None:
    rpc = RpcClient()
    client = world(EntityName.osd(1), 241, Policy.lossless_peer(), rpc)
    with socket_nobody_listens_on() as addr:
        conn = client.connect_to(OSD, addr)
        futs = [rpc.call(conn, MTest(i)) for i in range(3)]
        time.sleep(0.05)
        conn.mark_down()
        for f in futs:
            with pytest.raises(RequestDiscarded) as info:
                f.result(timeout=30)
            assert info.value.request.ident in (0, 1, 2)
    assert len(rpc) == 0


def test_cancel_and_close_leave_nothing_pending(world) -> None:
    rpc = RpcClient(timeout=60)
    client = world(EntityName.osd(1), 251, Policy.lossless_peer(), rpc)
    with socket_nobody_listens_on() as addr:
        conn = client.connect_to(OSD, addr)
        a, b = rpc.call(conn, MTest(1)), rpc.call(conn, MTest(2))
        assert len(rpc) == 2
        assert a.cancel()
        assert len(rpc) == 1
        rpc.close()
        with pytest.raises(RequestAborted):
            b.result(timeout=5)
        with pytest.raises(CancelledError):
            a.result(timeout=5)
        assert len(rpc) == 0
        with pytest.raises(RequestAborted):
            rpc.call(conn, MTest(3))


def test_reply_type_keeps_a_peers_request_from_matching(world) -> None:
    """Two peers both sending requests: the peer's request with our pending tid is not a reply."""
    echo = Echo()
    echo.ignore = {5}
    server = world(EntityName.osd(0), 261, Policy.lossless_peer(), echo)
    rpc = RpcClient(timeout=30)
    client = world(EntityName.osd(1), 262, Policy.lossless_peer(), rpc)
    conn = client.connect_to(OSD, server.get_myaddr())
    fut = rpc.call(conn, MTest(5), reply_type=MReply)    # tid 1, never answered
    wait_for(lambda: echo.seen == [5], what="the request")
    back = server.connect_to(OSD, client.get_myaddr())
    stray = MTest(99)
    stray.tid = fut_tid = 1
    back.send_message(stray)                             # a request of the peer's own, same tid
    done, _ = wait([fut], timeout=0.3)
    assert not done, "the peer's request was taken for our reply"
    reply = MReply(1005)
    reply.tid = fut_tid
    back.send_message(reply)
    assert fut.result(timeout=30).ident == 1005


def test_timeouts_under_many_requests_run_on_one_thread(world) -> None:
    echo = Echo()
    echo.ignore = set(range(50))
    server = world(EntityName.osd(0), 271, Policy.stateless_server(), echo)
    rpc = RpcClient(timeout=0.1)
    client = world(EntityName.client(1), 272, Policy.lossy_client(), rpc, bind=False)
    conn = client.connect_to(OSD, server.get_myaddr())
    before = threading.active_count()
    futs = [rpc.call(conn, MTest(i)) for i in range(50)]
    assert threading.active_count() <= before + 1
    for f in futs:
        with pytest.raises(RequestTimeout):
            f.result(timeout=30)
    assert len(rpc) == 0
