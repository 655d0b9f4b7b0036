"""A lossless session whose peer came back as another process ("wrong node").

The session keeps retrying (as Ceph does: the application or a map update marks it down), but
its cause was visible only at INFO, once per retry. Now the first fault of each cause is notable
(one WARNING line), retries with the same cause are not, and every one is counted in the perf
counter ``msgr_wrong_node``.
"""
from __future__ import annotations

import logging

from test_messenger_loopback import MTest, wait_for

from msgr import Config, EntityAddr, EntityName, Messenger, Policy
from msgr.errors import WrongNodeError
from msgr.protocol.actions import Fault, TimerKind
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.sim.fakehost import FakeHost
from msgr.wire import pack_server_identify

WANT = EntityAddr.parse("v1:127.0.0.1:6800/77")
SOCK_PEER = EntityAddr.parse("v1:127.0.0.1:45000/0")


def _attempt(p: ProtocolV1, server: EntityAddr, now_us: int) -> Fault:
    """One connect attempt that meets ``server``'s identify: returns its Fault."""
    p.on_connected(SOCK_PEER, now_us)
    p.take_output()
    (fault,) = [a for a in p.receive_data(pack_server_identify(server, SOCK_PEER), now_us) if isinstance(a, Fault)]
    assert p.state is State.CONNECTING        # lossless: backs off and retries
    acts = p.on_timer(TimerKind.RECONNECT, now_us + 1)
    assert p.state is State.CONNECTING and acts, acts
    return fault


def test_wrong_node_is_notable_once_per_cause():
    host = FakeHost(EntityName.osd(1), EntityAddr.parse("v1:127.0.0.1:6801/5"),
                    default_policy=Policy.lossless_peer())
    p = ProtocolV1(host)
    p.start_connect(WANT, EntityName.TYPE_OSD, 0)
    p.send_message(MTest(1), 0)     # something to deliver: the session retries, not STANDBY
    restarted = WANT.with_nonce(99)
    faults = [_attempt(p, restarted, i * 1000) for i in range(5)]
    assert all(isinstance(f.error, WrongNodeError) for f in faults)
    assert faults[0].error.expected == WANT and faults[0].error.got == restarted
    assert "wrong node" in faults[0].reason and "nonce 99, expected 77" in faults[0].reason
    assert [f.notable for f in faults] == [True, False, False, False, False]
    # the peer restarts again: a new cause, reported again
    again = _attempt(p, WANT.with_nonce(100), 10_000)
    assert again.notable and "nonce 100" in again.reason
    # another address answering at that ip:port is a wrong node too
    elsewhere = _attempt(p, EntityAddr.parse("v1:127.0.0.2:6800/77"), 20_000)
    assert isinstance(elsewhere.error, WrongNodeError) and elsewhere.notable


def test_routine_faults_are_not_notable():
    host = FakeHost(EntityName.osd(1), EntityAddr.parse("v1:127.0.0.1:6801/5"),
                    default_policy=Policy.lossless_peer())
    p = ProtocolV1(host)
    p.start_connect(WANT, EntityName.TYPE_OSD, 0)
    (fault,) = [a for a in p.on_socket_error("connection refused", 0, refused=True) if isinstance(a, Fault)]
    assert not fault.notable


def test_messenger_warns_once_and_counts_every_wrong_node(caplog):
    caplog.set_level(logging.INFO, logger="msgr")
    fast_retry = Config(ms_initial_backoff=0.01, ms_max_backoff=0.02)
    server = Messenger.create(EntityName.osd(31), nonce=3131, config=fast_retry.copy())
    server.set_default_policy(Policy.lossless_peer())
    server.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    client = Messenger.create(EntityName.osd(32), nonce=3232, config=fast_retry.copy())
    client.set_default_policy(Policy.lossless_peer())
    server.start()
    client.start()
    try:
        # the address the client remembers: same ip:port, the nonce of an earlier incarnation
        stale = server.get_myaddr().with_nonce(4444)
        conn = client.connect_to(EntityName.TYPE_OSD, stale)
        conn.send_message(MTest(1))
        wait_for(lambda: client.perf_dump()["AsyncMessenger"]["msgr_wrong_node"] >= 5,
                 what="five wrong-node retries")
        assert not conn.is_connected()
    finally:
        client.shutdown()
        server.shutdown()
        client.wait()
        server.wait()
    lines = [r for r in caplog.records if r.name.startswith("msgr") and "wrong node" in r.getMessage()]
    warnings = [r for r in lines if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "nonce 3131, expected 4444" in warnings[0].getMessage()
    assert len(lines) >= 5     # the retries still leave INFO lines, for who looks closer
