"""Connection events on the worker (ms_handle_fast_connect / ms_handle_fast_accept) and events
nobody listens to: through real messengers over loopback.

The fast callbacks run on the connection's worker before the queued callback and before any message
of the session; the queued ms_handle_accept still comes before the session's first ms_dispatch.
An event whose callback no dispatcher overrides is not queued, so the dispatch thread is not woken.
Waits poll with a deadline that only turns a hang into a failure; nothing asserts on timing.
"""
from __future__ import annotations

import threading

import pytest
from rawv1 import open_session
from test_messenger_loopback import MTest, wait_for

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy
from msgr.dispatch_queue import D_ACCEPT, D_BAD_RESET, DispatchQueue
from msgr.dispatcher import DispatcherChain

OSD = EntityName.TYPE_OSD


def _thread() -> str:
    return "dispatch" if threading.current_thread().name.startswith("ms_dispatch") else "worker"


class Recorder(Dispatcher):
    """Logs (what, thread) in order; fast-dispatches odd idents, queues even ones."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _note(self, what: str) -> None:
        with self.lock:
            self.log.append((what, _thread()))

    def ms_can_fast_dispatch(self, msg) -> bool:
        return isinstance(msg, MTest) and msg.ident % 2 == 1

    def ms_fast_dispatch(self, msg) -> None:
        self._note(f"msg{msg.ident}")

    def ms_dispatch(self, msg) -> bool:
        self._note(f"msg{msg.ident}")
        return True

    def ms_handle_fast_connect(self, conn) -> None:
        self._note("fast_connect")

    def ms_handle_connect(self, conn) -> None:
        self._note("connect")

    def ms_handle_fast_accept(self, conn) -> None:
        self._note("fast_accept")

    def ms_handle_accept(self, conn) -> None:
        self._note("accept")


def _messenger(name: EntityName, nonce: int, d: Dispatcher, policy: Policy) -> Messenger:
    ms = Messenger.create(name, nonce=nonce, config=Config())
    ms.set_default_policy(policy)
    ms.add_dispatcher_tail(d)
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    return ms


@pytest.fixture
def stop_after():
    made: list[Messenger] = []
    yield made.append
    for ms in made:
        ms.shutdown()
    for ms in made:
        ms.wait()


@pytest.mark.parametrize("workers", [1, 2])
def test_fast_events_run_on_the_worker_before_the_queued_ones_and_the_messages(stop_after, workers):
    srv_d, cli_d = Recorder(), Recorder()
    cfg = Config(ms_async_op_threads=workers)
    srv = Messenger.create(EntityName.osd(1), nonce=2000, config=cfg)
    srv.set_default_policy(Policy.lossless_peer())
    srv.add_dispatcher_tail(srv_d)
    srv.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    srv.start()
    stop_after(srv)
    cli = _messenger(EntityName.osd(0), 1000, cli_d, Policy.lossless_peer())
    stop_after(cli)
    conn = cli.connect_to(OSD, srv.get_myaddr())
    for i in range(1, 7):
        conn.send_message(MTest(i))
    wait_for(lambda: sum(w.startswith("msg") for w, _ in srv_d.log) == 6, what="6 messages")
    wait_for(lambda: ("connect", "dispatch") in cli_d.log, what="ms_handle_connect")
    srv_log, cli_log = list(srv_d.log), list(cli_d.log)
    assert srv_log.count(("fast_accept", "worker")) == 1 and srv_log.count(("accept", "dispatch")) == 1
    # the fast one first, on the worker, before any message (fast or queued) of the session
    assert srv_log[0] == ("fast_accept", "worker"), srv_log
    # the queued one in order with the queued messages: before the first of them
    queued = [w for w, t in srv_log if t == "dispatch"]
    assert queued[0] == "accept" and queued[1:] == ["msg2", "msg4", "msg6"], srv_log
    assert [w for w, t in srv_log if t == "worker"] == ["fast_accept", "msg1", "msg3", "msg5"]
    assert cli_log.index(("fast_connect", "worker")) < cli_log.index(("connect", "dispatch"))


class MessagesOnly(Dispatcher):
    """Overrides no connection callback: its messenger has no event to queue."""

    def ms_dispatch(self, msg) -> bool:
        return True


class ResetsToo(MessagesOnly):
    def __init__(self) -> None:
        self.resets = 0

    def ms_handle_reset(self, conn) -> bool:
        self.resets += 1
        return True


def _dispatched(ms: Messenger) -> int:
    return ms.perf_dump()["dispatch_queue"]["dispatched"]


@pytest.mark.parametrize("dispatcher", [MessagesOnly, ResetsToo])
def test_events_nobody_listens_to_are_not_queued(stop_after, dispatcher):
    """Accepted lossy sessions that end by the peer closing: ACCEPT and the reset reach the
    dispatch thread only for a dispatcher that has the callback."""
    d = dispatcher()
    srv = _messenger(EntityName.osd(1), 2000, d, Policy.stateless_server())
    stop_after(srv)
    n = 5
    for _ in range(n):
        s = open_session(srv.get_myaddr())
        s.close()
    wait_for(lambda: srv.perf_dump()["connections"]["live"] == 0, what="sessions closed")
    if dispatcher is ResetsToo:
        wait_for(lambda: d.resets == n, what=f"{n} resets")
        assert _dispatched(srv) == n
    else:
        assert _dispatched(srv) == 0


def test_queue_event_says_whether_anybody_hears_it():
    chain = DispatcherChain()
    chain.add_tail(MessagesOnly())
    dq = DispatchQueue(chain, "t")
    assert not dq.queue_event(D_ACCEPT, "c") and len(dq) == 0
    chain.add_tail(ResetsToo())
    assert not dq.queue_event(D_ACCEPT, "c") and len(dq) == 0
    assert dq.queue_event(D_BAD_RESET, "c") and len(dq) == 1
    # a callback set on an instance, even after the dispatcher was added, is heard too
    only = MessagesOnly()
    chain.add_head(only)
    only.ms_handle_accept = lambda conn: None
    assert dq.queue_event(D_ACCEPT, "c") and len(dq) == 2
    dq.discard_queue()
