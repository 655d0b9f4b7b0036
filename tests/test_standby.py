"""STANDBY and mark_down of lossless sessions, real messengers over loopback TCP (issue 5).

* A lossless_peer session whose socket breaks while idle goes to STANDBY: no
  socket, no armed reconnect timer, no reconnect counted -- and it reconnects
  only when a message is queued, which then arrives (same Connection object).
* mark_down of a lossless session ends it: connect_to gives a new Connection
  and a new session; a resetcheck peer (lossless_peer_reuse) sees a remote reset.
"""
from __future__ import annotations

import socket

import pytest
from lossless_util import Cluster, check_exact, perf, send_range, wait_for

from msgr import Config, EntityName, Policy
from msgr.protocol.states import State

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

OSD = EntityName.TYPE_OSD
CFG = dict(ms_initial_backoff=0.01, ms_max_backoff=0.05)


def _idle_pair(cluster: Cluster, policy=Policy.lossless_peer):
    a, ra = cluster.make(EntityName.osd(0), 1001, Config(**CFG), policy())
    b, rb = cluster.make(EntityName.osd(1), 2002, Config(**CFG), policy())
    ca = a.connect_to(OSD, b.get_myaddr())
    send_range(ca, 1, range(10))
    wait_for(lambda: rb.n(1) == 10, what="first messages")
    cb = b.connect_to(OSD, a.get_myaddr())
    send_range(cb, 2, range(10))
    wait_for(lambda: ra.n(2) == 10, what="first messages back")
    wait_for(lambda: not ca._proto._outq.sent and not cb._proto._outq.sent, what="everything acked")
    return a, ra, ca, b, rb, cb


def _is_standby_and_quiet(conn) -> bool:
    # STANDBY with no socket and no timer armed: nothing can start a reconnect but a send
    return conn._proto.state is State.STANDBY and conn._sock is None and not conn._timers


@pytest.mark.parametrize("sender", ["connector", "acceptor"])
def test_idle_socket_break_goes_to_standby_and_reconnects_on_send(cluster, sender):
    a, ra, ca, b, rb, cb = _idle_pair(cluster)
    ra_before, rb_before = perf(a)["msgr_reconnects"], perf(b)["msgr_reconnects"]
    sa_before = ca._proto.stats["reconnects"] + cb._proto.stats["reconnects"]
    created = perf(a)["msgr_created_connections"] + perf(b)["msgr_created_connections"]
    cseq = ca._proto.connect_seq
    sock = ca._sock
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)        # the network breaks while nobody has anything to send
    wait_for(lambda: _is_standby_and_quiet(ca) and _is_standby_and_quiet(cb), timeout=20,
             what="both ends in STANDBY", detail=lambda: f"{ca!r} {ca._timers} / {cb!r} {cb._timers}")
    assert not ca.is_connected() and not cb.is_connected()
    assert perf(a)["msgr_reconnects"] == ra_before and perf(b)["msgr_reconnects"] == rb_before
    assert ca._proto.stats["reconnects"] + cb._proto.stats["reconnects"] == sa_before
    assert perf(a)["msgr_created_connections"] + perf(b)["msgr_created_connections"] == created
    assert ra.count("reset") == rb.count("reset") == 0
    # a send wakes it up: one reconnect, the message arrives on the same session objects
    conn, rec, who = (ca, rb, 1) if sender == "connector" else (cb, ra, 2)
    send_range(conn, who, range(10, 15))
    wait_for(lambda: rec.n(who) == 15, what="the message that woke the session",
             detail=lambda: f"{ca!r} {cb!r} {ca.last_fault} {cb.last_fault}")
    check_exact(rec.ids(who), range(15), f"{sender} stream")
    assert ca.is_connected() and cb.is_connected()
    assert a.connect_to(OSD, b.get_myaddr()) is ca and b.connect_to(OSD, a.get_myaddr()) is cb
    # exactly one reconnect: the sender counts its attempt, the peer the socket it adopted (proto
    # stats; msgr_reconnects does not count a once-accepted session's first outgoing socket)
    assert ca._proto.stats["reconnects"] + cb._proto.stats["reconnects"] == sa_before + 2
    assert perf(a)["msgr_reconnects"] + perf(b)["msgr_reconnects"] <= ra_before + rb_before + 1
    assert ca._proto.connect_seq > cseq
    assert ra.count("remote_reset") == rb.count("remote_reset") == 0


def test_lossless_client_does_not_go_to_standby(cluster):
    """lossless_client has standby=False: an idle break is followed by an immediate reconnect."""
    a, ra = cluster.make(EntityName.client(1), 1001, Config(**CFG), Policy.lossless_client(),
                         policies={OSD: Policy.lossless_client()})
    b, rb = cluster.make(EntityName.osd(1), 2002, Config(**CFG), Policy.stateful_server())
    ca = a.connect_to(OSD, b.get_myaddr())
    send_range(ca, 1, range(5))
    wait_for(lambda: rb.n(1) == 5 and not ca._proto._outq.sent, what="delivered and acked")
    before = perf(a)["msgr_reconnects"]
    ca._sock.shutdown(socket.SHUT_RDWR)
    wait_for(lambda: perf(a)["msgr_reconnects"] > before and ca.is_connected(), timeout=20,
             what="the lossless client reconnecting by itself", detail=lambda: repr(ca))
    send_range(ca, 1, range(5, 10))
    wait_for(lambda: rb.n(1) == 10, what="delivery after the reconnect")
    check_exact(rb.ids(1), range(10), "client stream")


@pytest.mark.parametrize("policy", [Policy.lossless_peer, Policy.lossless_peer_reuse], ids=lambda p: p.__name__)
def test_mark_down_ends_the_lossless_session(cluster, policy):
    a, ra, ca, b, rb, cb = _idle_pair(cluster, policy)
    ca.mark_down()
    wait_for(lambda: ca._closed, what="the marked-down connection closed")
    send_range(ca, 1, range(100, 105))        # on a dead Connection: never delivered
    c2 = a.connect_to(OSD, b.get_myaddr())
    assert c2 is not ca
    send_range(c2, 1, range(20), session=1)
    wait_for(lambda: rb.n(1, 1) == 20, what="delivery on the new session",
             detail=lambda: f"{c2!r} {c2.last_fault} / b: {b.connections()}")
    check_exact(rb.ids(1, 1), range(20), "new session")
    check_exact(rb.ids(1, 0), range(10), "old session (nothing after mark_down)")
    assert ra.count("reset") == 0    # mark_down gives no reset callback to its caller
    assert c2._proto.connect_seq == 1, "the new session must start from connect_seq 0"
    if policy().resetcheck:
        # the peer recognises the connect_seq-0 attempt as a restart of its old session
        wait_for(lambda: rb.count("remote_reset") == 1, what="ms_handle_remote_reset on the peer")
    # the peer keeps talking to the new session
    cb2 = b.connect_to(OSD, a.get_myaddr())
    send_range(cb2, 2, range(7), session=1)
    wait_for(lambda: ra.n(2, 1) == 7, what="delivery back on the new session")
    check_exact(ra.ids(2, 1), range(7), "peer's new-session stream")
    assert [i for s_, x, i in ra.by_conn[id(c2)] if (s_, x) == (2, 1)] == list(range(7))
