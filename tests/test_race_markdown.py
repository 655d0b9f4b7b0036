"""The lossless client that marks its session down while a server connects to it (issue 11).

tests/test_race_stress.py ``test_race[lossless_client-stateful_server-*-markdown]`` lost the client's
messages about once in 1600 rounds: the client (a) and the server (b) connect at the same instant, a
marks its attempt down and calls ``connect_to`` again, which hands out the session a has just
accepted from b. Two defects let b answer that session RESETSESSION, discarding what a queued on it,
and a third could let a open a second session from a connect b had abandoned:

* mark_down took the session out of the connection map *before* stopping its protocol: in between
  its worker went on with the handshake beside the session the accept registered, and its retried
  connect (a fresh global_seq, connect_seq 0) read at b as "a restarted" (row 14), resetting b's
  session; a's accepted session then met RESETSESSION (row 19).
* With mark_down right, the accept itself can come too late: b had dropped the socket of its own
  attempt for a's (row 17) before reading a's success reply, so the session a accepted (connect_seq 1
  on a's side only) reconnects with connect_seq 2 and b, whose attempt never opened, answers
  RESETSESSION. Ceph discards the client's queue there; a session that never was OPEN has written
  and delivered nothing, so pymsgr starts it over instead (PROTOCOL.md §8).
* A connect older than a session a already had with b is stale: answered RETRY_GLOBAL (row 8a).
"""
from __future__ import annotations

import itertools
import time

import pytest
from lossless_util import check_exact, wait_for
from test_protocol_support import PEER_ADDR, RawPeer

from msgr import Config, EntityAddr, EntityName, Policy
from msgr.protocol.actions import ConnEvent, Notify
from msgr.protocol.states import State
from msgr.sim import SimNetwork
from msgr.sim.chaos import make_message, parse_message
from msgr.sim.fakehost import FakeHost
from msgr.wire import Tag, proto_version

OSD, CLIENT = EntityName.TYPE_OSD, EntityName.TYPE_CLIENT
_nonces = itertools.count(70_000)


def test_mark_down_stops_the_protocol_before_the_session_leaves_the_map(cluster):
    """As Ceph's stop() unregisters under the connection lock: while the session leaves the map its
    protocol is already CLOSED and its worker cannot run it, so no accept can register a second
    session for the peer while this one still talks to it."""
    a, _ra = cluster.make(EntityName.client(4100), next(_nonces), policies={OSD: Policy.lossless_client()})
    b, rb = cluster.make(EntityName.osd(1), next(_nonces), policies={CLIENT: Policy.stateful_server()})
    c = a.connect_to(OSD, b.get_myaddr())
    c.send_keepalive()
    wait_for(c.is_connected, what="a's session open")
    seen: list[tuple[str, bool]] = []
    host = a._host
    removing = host.connection_marked_down

    def spy(conn) -> None:
        seen.append((conn._proto.state.name, conn._lock._is_owned()))
        removing(conn)

    host.connection_marked_down = spy
    c.mark_down()
    assert seen == [("CLOSED", True)], f"left the map as {seen} (state, under the session lock)"
    assert a._conns.get(b.get_myaddr()) is None


def _accepted_then_reset(seed: int, workers: int):
    """b (stateful_server) connects to a (lossless_client); a accepts and, once its success reply is
    written, connect_to hands out that session and a queues 10 messages on it; the socket resets
    before b reads the reply. Returns (ids b delivered, a's records)."""
    net = SimNetwork(seed)
    a = net.add_endpoint(EntityName.client(4100), policies={OSD: Policy.lossless_client()}, workers=workers)
    b = net.add_endpoint(EntityName.osd(1), policies={CLIENT: Policy.stateful_server()}, workers=workers)
    b.connect_to(CLIENT, a.get_myaddr())
    for _ in range(1_000_000):
        accepted = a.conns.get(b.get_myaddr())
        if accepted is not None and accepted.state is State.ACCEPTING_WAIT_SEQ:
            break
        assert net.step(), "b's connect never reached a"
    conn = a.connect_to(OSD, b.get_myaddr())
    assert conn.proto is accepted
    for i in range(10):
        conn.send_message(make_message(1, i, 127))
    (sock,) = net.live_sockets()
    net.reset_socket(sock)   # b never reads a's reply: its attempt did not open
    net.run_for(5_000_000)
    delivered = [parse_message(r.data)[1] for r in b.records_of("deliver")]
    return delivered, a


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_a_session_that_never_opened_keeps_its_queue_through_resetsession(seed, workers):
    """a's accepted session reconnects with connect_seq 2; b, whose own attempt never opened, answers
    RESETSESSION (row 19). The session was never OPEN, so none of its messages can be at b: they are
    delivered exactly once, nothing is discarded and a hears of no remote reset (before the fix all
    10 were discarded with ms_handle_remote_reset, in every seed)."""
    delivered, a = _accepted_then_reset(seed, workers)
    assert not a.records_of("discarded"), "a's messages were discarded"
    assert ConnEvent.BAD_REMOTE_RESET not in [r.data for r in a.records_of("notify")]
    check_exact(delivered, range(10), f"seed {seed} workers {workers}: a -> b")


def test_a_connect_older_than_a_session_we_had_is_stale():
    """With no registered session, a connect whose global_seq is below the peer_global_seq of a session
    we had with that address (the socket of an attempt the peer has since replaced, read late) is
    answered RETRY_GLOBAL, not opened (PROTOCOL.md §7 row 8a; Ceph opens it).

    In the markdown race: b replaced its own attempt by a's (row 17) and opened with a; a marked its
    session down; only then did a read b's abandoned connect. Opened, that session reconnects with
    connect_seq 2 to b's session of connect_seq 1 (row 20): b resends what a's first session already
    delivered, and drops a's new messages up to its in_seq as seen before."""
    proto = proto_version(CLIENT, OSD, False)   # what a client expects in an OSD's connect
    host = FakeHost(EntityName.client(4100), EntityAddr.parse("v1:127.0.0.1:6900/4100"),
                    policies={OSD: Policy.lossless_client()})
    had = RawPeer(host, claimed=PEER_ADDR)
    r, _ = had.connect(host_type=OSD, proto=proto, gseq=108)
    had.send_seq(0)
    assert had.proto.state is State.OPEN and had.proto.peer_global_seq == 108
    had.proto.mark_down(0)
    assert host.lookup_conn(PEER_ADDR) is None
    late = RawPeer(host, claimed=PEER_ADDR)
    r, _ = late.connect(host_type=OSD, proto=proto, gseq=50)
    assert (Tag(r.tag), r.global_seq) == (Tag.RETRY_GLOBAL, 108) and late.proto.last_decision.row == 8
    assert host.lookup_conn(PEER_ADDR) is None and Notify(ConnEvent.ACCEPT) not in late.acts
    r, _ = late.connect(host_type=OSD, proto=proto, gseq=109)   # a live peer retries above it: opened
    assert Tag(r.tag) in (Tag.SEQ, Tag.READY) and host.lookup_conn(PEER_ADDR) is late.proto


def test_a_stop_posted_from_another_worker_comes_before_the_next_read(cluster):
    """mark_down from a worker that cannot take the session lock (another worker: a fast-dispatch
    callback) posts the stop. A read event already waiting for the lock then must not run the session:
    the marked-down session stops there and never answers the peer again (here: no KEEPALIVE2_ACK)."""
    cfg = Config(ms_async_op_threads=2)
    a, _ra = cluster.make(EntityName.client(4100), next(_nonces), cfg.copy(), policies={OSD: Policy.lossless_client()})
    b, rb = cluster.make(EntityName.osd(1), next(_nonces), cfg.copy(), policies={CLIENT: Policy.stateful_server()})
    ca = a.connect_to(OSD, b.get_myaddr())
    ca.send_keepalive()
    wait_for(lambda: ca.is_connected() and rb.count("accept") == 1, what="the session open on both sides")
    (other,) = [w for w in a._stack.workers if w is not ca._worker]   # a worker that is not a's session's
    (cb,) = [c for kind, c in rb.events if kind == "accept"]
    wait_for(lambda: cb.is_connected() and ca.get_last_keepalive_ack() > 0, what="both sides open")
    before = cb.get_last_keepalive_ack()
    with ca._lock:                      # a's worker, reading b's keepalive, waits for this lock
        cb.send_keepalive()
        time.sleep(0.3)                 # it arrives and a's worker blocks in its read handler
        other.center.submit_to(ca.mark_down, wait=True)   # on another worker: the stop is posted
        assert ca._proto.state is not State.CLOSED    # the lock was held: only posted
    wait_for(lambda: ca._closed, what="a's session finished")
    time.sleep(0.3)                     # an ack, if one was written, has arrived by now
    assert cb.get_last_keepalive_ack() == before, "the marked-down session answered the peer's keepalive"


@pytest.mark.parametrize("policy, kept", [(Policy.lossless_client, 108), (Policy.lossy_client, 0)])
def test_only_a_lossless_session_that_leaves_the_map_is_remembered(policy, kept):
    """GonePeers.session_left: a lossy session is never resumed, so a stale connect cannot harm it (and a
    server's stream of lossy client sessions stays out of the record)."""
    host = FakeHost(EntityName.client(4100), EntityAddr.parse("v1:127.0.0.1:6900/4100"), policies={OSD: policy()})
    had = RawPeer(host, claimed=PEER_ADDR)
    had.connect(host_type=OSD, proto=proto_version(CLIENT, OSD, False), gseq=108)
    had.send_seq(0)
    assert host.lookup_conn(PEER_ADDR) is had.proto and had.proto.peer_global_seq == 108
    had.proto.mark_down(0)
    assert host.gone_peer_global_seq(PEER_ADDR) == kept
