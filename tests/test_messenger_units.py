"""Unit tests of the messenger's I/O side that need no ProtocolV1: dispatch queue,
dispatcher chain, perf counters, fault injection, and AsyncConnection's socket
paths driven by a scripted fake protocol over a socketpair."""
from __future__ import annotations

import json
import random
import socket
import threading

import pytest

from eventcenter import Worker
from msgr import Config, Dispatcher, EntityName, Message
from msgr.connection import AsyncConnection
from msgr.dispatch_queue import D_ACCEPT, D_BAD_RESET, D_CONN_REFUSED, D_CONNECT, DispatchQueue
from msgr.dispatcher import DispatcherChain
from msgr.fault_inject import FaultInjector
from msgr.messenger import Messenger
from msgr.perf import COUNTERS, MessengerPerf
from msgr.protocol import actions as A
from msgr.throttle import Throttle


def _msg(prio: int, tag: int) -> Message:
    m = Message()
    m.header.priority = prio
    m.header.tid = tag
    return m


class Recorder(Dispatcher):
    def __init__(self, handle: bool = True) -> None:
        self.seen: list = []
        self.handle = handle
        self.done = threading.Event()
        self.expect = 0

    def _note(self, item) -> None:
        self.seen.append(item)
        if self.expect and len(self.seen) >= self.expect:
            self.done.set()

    def ms_dispatch(self, msg):
        self._note(("msg", msg.header.tid))
        return self.handle

    def ms_handle_connect(self, conn):
        self._note(("connect", conn))

    def ms_handle_accept(self, conn):
        self._note(("accept", conn))

    def ms_handle_reset(self, conn):
        self._note(("reset", conn))
        return True

    def ms_handle_refused(self, conn):
        self._note(("refused", conn))
        return True


# --- DispatchQueue -------------------------------------------------------------

def test_dispatch_queue_priority_then_fifo_and_events_first():
    chain = DispatcherChain()
    rec = Recorder()
    chain.add_tail(rec)
    dq = DispatchQueue(chain, "t")
    # queue everything before the thread starts, so the order is decided by the queue alone
    for i, prio in enumerate([63, 127, 63, 196, 127, 63]):
        dq.enqueue(_msg(prio, i))
    dq.queue_event(D_CONNECT, "c1")
    dq.queue_event(D_ACCEPT, "c2")
    rec.expect = 8
    dq.start()
    assert rec.done.wait(5)
    dq.shutdown()
    assert dq.wait(5)
    assert rec.seen == [("connect", "c1"), ("accept", "c2"), ("msg", 3), ("msg", 1), ("msg", 4),
                        ("msg", 0), ("msg", 2), ("msg", 5)]


def test_dispatch_queue_codes_map_to_callbacks_and_release_throttle():
    chain = DispatcherChain()
    first, second = Recorder(handle=False), Recorder()
    chain.add_tail(second)
    chain.add_head(first)  # head: asked first, declines, so second handles
    dq = DispatchQueue(chain, "t")
    thr = Throttle("dispatch", 100)
    m = _msg(127, 7)
    assert thr.try_get(60)
    m._throttled = [(thr, 60)]
    dq.enqueue(m)
    dq.queue_event(D_BAD_RESET, "x")
    dq.queue_event(D_CONN_REFUSED, "y")
    first.expect = 3
    second.expect = 1
    dq.start()
    assert first.done.wait(5) and second.done.wait(5)
    dq.shutdown()
    dq.wait(5)
    assert ("msg", 7) in first.seen and ("msg", 7) in second.seen
    # reset/refused stop at the first dispatcher that handles them (first handles them)
    assert ("reset", "x") in first.seen and ("reset", "x") not in second.seen
    assert ("refused", "y") in first.seen
    assert thr.current == 0


@pytest.mark.allow_error_log("dispatcher raised on")   # the test provokes this line
def test_dispatch_queue_survives_a_raising_dispatcher_and_restarts():
    class Boom(Dispatcher):
        def ms_dispatch(self, msg):
            if msg.header.tid == 1:
                raise RuntimeError("boom")
            return False

    chain = DispatcherChain()
    rec = Recorder()
    chain.add_tail(Boom())
    chain.add_tail(rec)
    dq = DispatchQueue(chain, "t")
    dq.start()
    rec.expect = 1
    dq.enqueue(_msg(127, 1))
    dq.enqueue(_msg(127, 2))
    assert rec.done.wait(5)
    assert rec.seen == [("msg", 2)]
    dq.shutdown()
    dq.wait(5)
    # after shutdown nothing is dispatched and throttles come back
    thr = Throttle("d", 10)
    thr.try_get(5)
    m = _msg(127, 3)
    m._throttled = [(thr, 5)]
    dq.enqueue(m)
    assert thr.current == 0
    # start again works
    rec.done.clear()
    rec.expect = 2
    dq.start()
    dq.enqueue(_msg(127, 4))
    assert rec.done.wait(5)
    assert rec.seen[-1] == ("msg", 4)
    dq.shutdown()
    dq.wait(5)


def test_dispatch_queue_local_delivery_honours_fast_dispatch():
    class Fast(Dispatcher):
        def __init__(self):
            self.fast = []
            self.done = threading.Event()

        def ms_can_fast_dispatch(self, msg):
            return msg.header.tid % 2 == 0

        def ms_fast_dispatch(self, msg):
            self.fast.append(msg.header.tid)
            self.done.set()

    chain = DispatcherChain()
    fast, rec = Fast(), Recorder()
    chain.add_tail(fast)
    chain.add_tail(rec)
    dq = DispatchQueue(chain, "t")
    rec.expect = 1
    dq.local_delivery(_msg(127, 1))
    dq.local_delivery(_msg(127, 2))
    dq.start()
    assert rec.done.wait(5) and fast.done.wait(5)
    dq.shutdown()
    dq.wait(5)
    assert fast.fast == [2] and rec.seen == [("msg", 1)]


def test_dispatcher_defaults_decline():
    d = Dispatcher()
    m = Message()
    assert d.ms_can_fast_dispatch(m) is False
    assert d.ms_dispatch(m) is False
    assert d.ms_handle_reset(None) is False
    assert d.ms_handle_refused(None) is False
    assert d.ms_can_fast_dispatch_any() is False
    chain = DispatcherChain()
    chain.add_tail(d)
    assert chain.fast_dispatcher_for(m) is None
    assert chain.deliver(m) is False


# --- perf --------------------------------------------------------------------------

def test_perf_blocks_sum_and_dump_is_json():
    perf = MessengerPerf("osd.0")
    a, b = perf.block("w0"), perf.block("w1")
    a.msgr_recv_messages += 3
    b.msgr_recv_messages += 4
    b.msgr_send_bytes += 100

    def bump():
        perf.here().msgr_faults += 1
    t = threading.Thread(target=bump)
    t.start()
    t.join()
    d = perf.dump({"x": {"y": 1}})
    json.dumps(d)
    assert d["AsyncMessenger"]["msgr_recv_messages"] == 7
    assert d["AsyncMessenger"]["msgr_send_bytes"] == 100
    assert d["AsyncMessenger"]["msgr_faults"] == 1
    assert set(d["AsyncMessenger"]) == set(COUNTERS)
    assert d["x"] == {"y": 1}
    perf.reset()
    assert perf.totals()["msgr_recv_messages"] == 0


# --- fault injection ---------------------------------------------------------------

def test_socket_failure_injection_rate_and_replayable():
    cfg = Config(ms_inject_socket_failures=20)
    hits = []
    for _ in range(2):
        inj = FaultInjector(cfg, random.Random(42))
        hits.append([inj.maybe_fail_socket(_DummySock(), "read") for _ in range(4000)])
    assert hits[0] == hits[1]                     # same seed, same decisions
    assert 120 < sum(hits[0]) < 300               # about one in 20
    off = FaultInjector(Config(), random.Random(1))
    assert not off.active and not any(off.maybe_fail_socket(_DummySock(), "w") for _ in range(1000))


def test_injected_failure_really_shuts_the_socket_down():
    a, b = socket.socketpair()
    with a, b:
        inj = FaultInjector(Config(ms_inject_socket_failures=1), random.Random(0))
        assert inj.maybe_fail_socket(a, "write")
        with pytest.raises(OSError):
            a.send(b"x")
        assert b.recv(10) == b""


def test_delivery_delay_only_for_listed_types():
    cfg = Config(ms_inject_delay_type="osd", ms_inject_delay_probability=1.0, ms_inject_delay_max=0.5)
    inj = FaultInjector(cfg, random.Random(3))
    delays = [inj.delivery_delay_us(EntityName.TYPE_OSD) for _ in range(100)]
    assert all(0 <= d <= 500_000 for d in delays) and max(delays) > 0
    assert inj.delivery_delay_us(EntityName.TYPE_CLIENT) == 0


class _DummySock:
    def shutdown(self, how):
        pass

    def fileno(self):
        return -1


# --- AsyncConnection socket paths with a scripted protocol ------------------------

class FakeProto:
    """Just enough of ProtocolV1 to drive AsyncConnection's read and write paths."""

    def __init__(self, bufsize: int = 4096) -> None:
        self.out: list = []
        self.wants_read = True
        self.received = bytearray()
        self._buf = bytearray(bufsize)
        self.errors: list = []
        self.sent_msgs: list = []
        self.take_calls = 0
        self.raise_on_read = False
        self.peer_type = None
        self.peer_name = None
        self.peer_addr = None
        self.features = 0
        self.state = "FAKE"
        self.connection = None

    def is_connected(self):
        return True

    def has_output(self):
        return bool(self.out)

    def take_output(self):
        self.take_calls += 1
        out, self.out = self.out, []
        return out

    def get_buffer(self):
        return memoryview(self._buf)

    def buffer_updated(self, n, now_us):
        if self.raise_on_read:
            raise RuntimeError("protocol bug")
        self.received += self._buf[:n]
        return []

    def on_socket_error(self, reason, now_us, refused=False):
        self.errors.append(reason)
        return [A.Fault(reason)]

    def send_message(self, msg, now_us):
        self.sent_msgs.append(msg)
        self.out.append(bytes([msg.header.tid % 256]) * 1000)
        return []

    def send_messages(self, msgs, now_us):
        for msg in msgs:
            self.send_message(msg, now_us)
        return []


@pytest.fixture
def worker():
    w = Worker(0, name="tw")
    w.start()
    yield w
    w.close()


def _conn(worker, proto, sock):
    ms = Messenger.create(EntityName.osd(0), nonce=1)
    conn = AsyncConnection(ms._host, worker, proto=proto)
    proto.connection = conn
    worker.center.submit_to(lambda: conn._install_socket(sock))
    return ms, conn


def test_partial_writes_keep_memoryviews_and_resume_on_writable(worker):
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    proto = FakeProto()
    ms, conn = _conn(worker, proto, a)
    chunks = [bytes([i]) * (64 * 1024 + i) for i in range(64)]
    expected = b"".join(chunks)
    proto.out = list(chunks)
    worker.center.submit_to(conn._after)
    # the socket buffer is tiny: the rest waits as memoryviews for WRITABLE
    pending = worker.center.submit_to(lambda: list(conn._wbufs))
    assert pending and all(type(x) is memoryview for x in pending)
    assert conn._writing
    got = bytearray()
    b.settimeout(5)
    while len(got) < len(expected):
        got += b.recv(1 << 20)
    assert bytes(got) == expected
    assert worker.center.submit_to(lambda: (conn._wbufs, conn._writing)) == ([], False)
    perf = ms._perf.totals()
    assert perf["msgr_eagain"] > 0 and perf["msgr_send_bytes"] == len(expected)
    worker.center.submit_to(conn._drop_socket)   # on the worker: closing a polled fd under it races EBADF
    b.close()


def test_send_message_from_another_thread_coalesces_into_one_write(worker):
    a, b = socket.socketpair()
    proto = FakeProto()
    ms, conn = _conn(worker, proto, a)
    gate = threading.Event()
    worker.center.dispatch_event_external(lambda: gate.wait(5))  # hold the worker busy
    for i in range(500):
        assert conn.send_message(_msg(127, i)) is None
    gate.set()
    got = bytearray()
    b.settimeout(5)
    while len(got) < 500 * 1000:
        got += b.recv(1 << 20)
    assert [m.header.tid for m in proto.sent_msgs] == list(range(500))
    assert proto.take_calls == 1          # one drain of the list, one take_output
    assert ms._perf.totals()["msgr_send_calls"] <= 3
    worker.center.submit_to(conn._drop_socket)   # on the worker: closing a polled fd under it races EBADF
    b.close()


def test_read_path_and_read_interest_follow_wants_read(worker):
    a, b = socket.socketpair()
    proto = FakeProto(bufsize=1000)
    ms, conn = _conn(worker, proto, a)
    worker.center.submit_to(conn._after)
    assert conn._reading
    data = bytes(range(256)) * 40
    b.sendall(data)
    done = threading.Event()

    def check():
        if len(proto.received) >= len(data):
            done.set()
        else:
            worker.center.create_time_event(1000, check)
    worker.center.submit_to(lambda: worker.center.create_time_event(0, check))
    assert done.wait(5)
    assert bytes(proto.received) == data
    # the protocol says stop: READABLE is no longer polled, bytes stay in the kernel
    proto.wants_read = False
    worker.center.submit_to(conn._after)
    assert not conn._reading
    b.sendall(b"later")
    worker.center.submit_to(lambda: None)
    assert bytes(proto.received) == data
    proto.wants_read = True
    worker.center.submit_to(conn._after)
    done.clear()
    data += b"later"
    worker.center.submit_to(lambda: worker.center.create_time_event(0, check))
    assert done.wait(5)
    worker.center.submit_to(conn._drop_socket)   # on the worker: closing a polled fd under it races EBADF
    b.close()


@pytest.mark.allow_error_log("unexpected error in read")   # the test provokes this line
def test_socket_error_and_callback_exception_fault_only_that_connection(worker):
    a, b = socket.socketpair()
    proto = FakeProto()
    ms, conn = _conn(worker, proto, a)
    a2, b2 = socket.socketpair()
    proto2 = FakeProto()
    ms2, conn2 = _conn(worker, proto2, a2)
    worker.center.submit_to(conn._after)
    worker.center.submit_to(conn2._after)
    proto.raise_on_read = True
    b.sendall(b"x")
    ev = threading.Event()

    def poll():
        if proto.errors:
            ev.set()
        else:
            worker.center.create_time_event(1000, poll)
    worker.center.submit_to(lambda: worker.center.create_time_event(0, poll))
    assert ev.wait(5)
    assert "protocol bug" in proto.errors[0] and conn._sock is None
    assert conn.last_fault and "RuntimeError" in conn.last_fault
    # the worker and the other connection still work
    b2.sendall(b"hello")
    ev2 = threading.Event()

    def poll2():
        if bytes(proto2.received) == b"hello":
            ev2.set()
        else:
            worker.center.create_time_event(1000, poll2)
    worker.center.submit_to(lambda: worker.center.create_time_event(0, poll2))
    assert ev2.wait(5)
    # a peer reset goes down the on_socket_error path
    b2.close()
    ev3 = threading.Event()
    b.close()

    def poll3():
        if proto2.errors or conn2._sock is None:
            ev3.set()
        else:
            worker.center.create_time_event(1000, poll3)
    worker.center.submit_to(lambda: worker.center.create_time_event(0, poll3))
    assert ev3.wait(5)
    assert conn2._sock is None
    a.close()


def test_reconnect_after_a_failed_write_does_not_poll_the_connecting_socket(worker):
    """Regression (issue 5 stuck reconnect): a write that fails inside _after() reconnects at once;
    READABLE must not be registered on the new socket before its connect completes, or the peer's
    banner is read in STATE_CONNECTING, dropped, and the handshake hangs forever."""
    from msgr.entity import EntityAddr

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    target = EntityAddr.from_sockaddr(lsock.getsockname())

    class ReconnectingProto(FakeProto):
        def on_socket_error(self, reason, now_us, refused=False):
            self.errors.append(reason)
            return [A.Fault(reason), A.OpenSocket(target)]

        def on_connected(self, local, now_us):
            return []

    a, b = socket.socketpair()
    b.close()                                  # the next write fails (EPIPE)
    proto = ReconnectingProto()
    ms, conn = _conn(worker, proto, a)
    proto.out = [b"x" * 100]

    def after_and_look():
        conn._after()
        return conn._connecting, conn._reading, conn._sock is not None
    connecting, reading, has_sock = worker.center.submit_to(after_and_look)
    assert proto.errors and has_sock and connecting
    assert not reading, "READABLE registered on a socket whose connect is still in flight"
    worker.center.submit_to(lambda: conn._drop_socket())
    lsock.close()
