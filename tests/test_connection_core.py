"""One connection core (msgr/connection_core.py): every transport performs the actions the same way.

The same action sequences run through each performer's primitives (AsyncConnection on a real worker and
socket, the simulator's SimConnection with 0, 1 and 3 workers, the wire pair's WireConn) and must leave
the same observable result. Each transport gets a small adapter:
build a connection, build a lossy session caught in the middle of its connect, let posted work run,
and read back what the application saw.
"""
from __future__ import annotations

import socket
import time

import pytest
from lossless_util import wait_for

from msgr import Config, Dispatcher, Messenger
from msgr.connection import AsyncConnection
from msgr.connection_core import ConnectionCore
from msgr.entity import EntityAddr, EntityName
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol import actions as A
from msgr.protocol.states import State
from msgr.sim import SimNetwork
from msgr.sim.connection import SimConnection
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireConn, WireNet

OSD = EntityName.TYPE_OSD
TRANSPORTS = ("async", "sim-0", "sim-1", "sim-3", "wire")


class _Seen(Dispatcher):
    def __init__(self) -> None:
        self.dispatched = 0
        self.resets: list = []

    def ms_dispatch(self, msg: Message) -> bool:
        self.dispatched += 1
        return True

    def ms_handle_reset(self, conn) -> bool:
        self.resets.append(conn)
        return True


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class AsyncAdapter:
    """AsyncConnection on a real messenger; actions are performed on the connection's worker."""

    def __init__(self, policy: Policy) -> None:
        self.msgr = Messenger.create(EntityName.osd(0), config=Config(ms_initial_backoff=30.0))
        self.msgr.set_policy(OSD, policy)
        self.seen = _Seen()
        self.msgr.add_dispatcher_tail(self.seen)
        self.msgr.start()

    def close(self) -> None:
        self.msgr.shutdown()
        self.msgr.wait()

    def new_conn(self) -> AsyncConnection:
        return AsyncConnection(self.msgr._host, self.msgr._stack.get_worker())

    def run(self, conn: AsyncConnection, fn) -> None:
        conn._center.submit_to(fn, wait=True)

    def session_mid_connect(self) -> AsyncConnection:
        # refused: the lossy session backs off (30 s) and stays CONNECTING
        conn = self.msgr.connect_to(OSD, EntityAddr.parse(f"127.0.0.1:{_closed_port()}/7"))
        wait_for(lambda: conn._fault_count >= 1, timeout=10, what="the refused connect")
        return conn

    def settle(self) -> None:
        for _ in range(3):
            for w in self.msgr._stack.workers:
                w.center.submit_to(lambda: None, wait=True)
        time.sleep(0.05)

    def timers(self, conn: AsyncConnection) -> int:
        return len(conn._timers)

    def delivered(self) -> int:
        wait_for(lambda: self.seen.dispatched, timeout=5, what="dispatch")
        return self.seen.dispatched

    def notified(self, conn: AsyncConnection) -> list:
        wait_for(lambda: conn in self.seen.resets, timeout=5, what="ms_handle_reset")
        return [A.ConnEvent.BAD_RESET for c in self.seen.resets if c is conn]


class _Inline:
    def run(self, conn, fn) -> None:
        fn()

    def close(self) -> None:
        pass


class SimAdapter(_Inline):
    def __init__(self, workers: int, policy: Policy) -> None:
        self.net = SimNetwork(1)
        pol = {OSD: policy}
        self.ep = self.net.add_endpoint(EntityName.osd(0), policies=pol, workers=workers)
        self.peer = self.net.add_endpoint(EntityName.osd(1), policies=pol, workers=workers)

    def new_conn(self) -> SimConnection:
        conn = SimConnection(self.ep)
        self.ep.all.add(conn)
        return conn

    def session_mid_connect(self) -> SimConnection:
        self.net.partition(self.ep, self.peer)   # the TCP connect hangs (SYN retries)
        conn = self.ep.connect_to(OSD, self.peer.get_myaddr())
        self.settle()
        return conn

    def settle(self) -> None:
        self.net.run_for(100)

    def timers(self, conn: SimConnection) -> int:
        return sum(1 for e in self.net._heap if not e.cancelled and e.what.startswith("timer"))

    def delivered(self) -> int:
        return len(self.ep.records_of("deliver"))

    def notified(self, conn: SimConnection) -> list:
        return [r.data for r in self.ep.records_of("notify", conn.uid)]


class WireAdapter(_Inline):
    def __init__(self, policy: Policy) -> None:
        self.net = WireNet(seed=1)
        pol = {OSD: policy}
        self.host = self.net.add_host(FakeHost(EntityName.osd(0), EntityAddr.parse("10.0.0.1:6800/1"),
                                               policies=pol))
        self.peer_addr = EntityAddr.parse("10.0.0.2:6800/2")

    def new_conn(self) -> WireConn:
        return WireConn(self.net, self.host)

    def session_mid_connect(self) -> WireConn:
        proto = self.net.connect(self.host, self.peer_addr, OSD)   # nobody listens: refused, backoff
        self.settle()
        return proto.connection

    def settle(self) -> None:
        while self.net.pending:
            self.net.pending.popleft()()

    def timers(self, conn: WireConn) -> int:
        return sum(1 for (p, _k) in self.net.timers if p is conn._proto)

    def delivered(self) -> int:
        return len(self.net.messages(self.host))

    def notified(self, conn: WireConn) -> list:
        return [a.event for a in self.net.events(conn._proto, A.Notify)]


@pytest.fixture
def adapters():
    made: list = []

    def make(name: str, policy: Policy | None = None):
        policy = policy or Policy.lossy_client()
        if name == "async":
            t = AsyncAdapter(policy)
        elif name == "wire":
            t = WireAdapter(policy)
        else:
            t = SimAdapter(int(name.split("-")[1]), policy)
        made.append(t)
        return t
    yield make
    for t in made:
        t.close()


@pytest.mark.parametrize("cls", [AsyncConnection, SimConnection, WireConn])
def test_every_action_has_one_meaning(cls):
    """No transport overrides what an action means: only the primitives are its own."""
    meanings = [n for n in vars(ConnectionCore) if n.startswith("_do_")] + \
        ["_handle", "_adopt", "_finish", "_on_timer", "_hand_over", "_poke", "_stop_replaced"]
    assert len(meanings) == 20
    for name in meanings:
        assert getattr(cls, name) is getattr(ConnectionCore, name), f"{cls.__name__} overrides {name}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timers_one_per_kind(transport, adapters):
    t = adapters(transport)
    conn = t.new_conn()
    far = 10**9   # never fires during the test
    arm = [A.ArmTimer(A.TimerKind.RECONNECT, far), A.ArmTimer(A.TimerKind.RECONNECT, 2 * far),
           A.ArmTimer(A.TimerKind.IDLE, far), A.CancelTimer(A.TimerKind.THROTTLE_RETRY)]
    t.run(conn, lambda: conn._handle(arm))
    assert t.timers(conn) == 2
    t.run(conn, lambda: conn._handle([A.CancelTimer(A.TimerKind.IDLE)]))
    assert t.timers(conn) == 1
    t.run(conn, lambda: conn._handle([A.SessionClosed("done")]))
    assert conn._closed and t.timers(conn) == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deliver_names_the_peer_from_its_first_message(transport, adapters):
    t = adapters(transport)
    conn = t.new_conn()
    conn._proto.peer_name = EntityName(OSD, EntityName.NEW)
    m = Message()
    m.header.src_type, m.header.src_num = OSD, 7
    m._set_connection(conn)
    t.run(conn, lambda: conn._handle([A.Deliver([m]), A.Fault("bad day"), A.Fault("worse day")]))
    assert conn._proto.peer_name == EntityName.osd(7)
    assert t.delivered() == 1 and conn._fault_count == 2 and conn._last_fault == "worse day"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_one_deliver_of_several_messages_names_the_peer_and_dispatches_them_all(transport, adapters):
    """One Deliver carries a receive call's messages: the first with an entity number names the
    peer, and every one of them reaches the dispatchers."""
    t = adapters(transport)
    conn = t.new_conn()
    conn._proto.peer_name = EntityName(OSD, EntityName.NEW)
    msgs = []
    for num in (EntityName.NEW, 7, 8):
        m = Message()
        m.header.src_type, m.header.src_num = OSD, num
        m._set_connection(conn)
        msgs.append(m)
    t.run(conn, lambda: conn._handle([A.Deliver(msgs)]))
    assert conn._proto.peer_name == EntityName.osd(7)
    wait_for(lambda: t.delivered() == 3, timeout=5, what="three dispatches")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stop_existing_closes_a_lossy_session_caught_mid_connect(transport, adapters):
    """Ceph's replace() of a lossy session: stop() + reset callback whatever its state. Performed as a
    socket error (two performers did), a lossy session still connecting just backed off and went on."""
    t = adapters(transport)
    existing = t.session_mid_connect()
    assert existing._proto.state is State.CONNECTING and not existing._closed
    temp = t.new_conn()
    t.run(temp, lambda: temp._handle([A.StopExisting(existing._proto)]))
    if transport != "async":   # (real workers may already have run it)
        assert not existing._closed   # posted to the existing session's worker, not run in the caller
    t.settle()
    assert existing._closed and existing._proto.state is State.CLOSED
    assert A.ConnEvent.BAD_RESET in t.notified(existing)
    assert t.timers(existing) == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_replace_existing_without_a_socket_fails_the_adopt(transport, adapters):
    """A replace whose socket is already gone: the existing session must not stay marked 'being
    replaced' (every later connect from the peer would get RETRY_GLOBAL): adopt_failed faults it."""
    t = adapters(transport, Policy.lossless_peer())
    existing = t.session_mid_connect()
    existing._proto._replacing = True    # what the accept's decision marks on it
    temp = t.new_conn()
    t.run(temp, lambda: temp._handle([A.ReplaceExisting(existing._proto)]))
    assert temp._closed
    t.settle()
    assert not existing._proto._replacing and not existing._closed
    assert existing._last_fault == "the socket to adopt died"
