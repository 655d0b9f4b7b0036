"""Policies with Ceph's fields and values, and what they do on real sockets (issue 5).

* The six kinds (plus stateless_registered_server) carry Ceph's flags
  (docs/PROTOCOL.md §9.4; register_lossy_clients false only for stateless_server).
* features_required missing on the peer: the server answers FEATURES, the
  client faults; lossy -> ms_handle_reset, lossless -> retries with backoff and
  never opens; nothing is delivered, and the queued message is reported.
* A lossy client whose socket is shut from the server side gets
  ms_handle_reset and does not reconnect.
"""
from __future__ import annotations

import socket

import pytest
from lossless_util import Tagged, perf, send_range, wait_for

from msgr import Config, EntityName, Policy
from msgr.features import FEATURES_SUPPORTED_DEFAULT, RECONNECT_SEQ
from msgr.protocol.states import State

pytest.importorskip("msgr.protocol.protocol_v1", reason="ProtocolV1 has not landed yet")

OSD, CLIENT = EntityName.TYPE_OSD, EntityName.TYPE_CLIENT
CFG = dict(ms_initial_backoff=0.01, ms_max_backoff=0.05)

#                             lossy  server standby resetcheck register_lossy_clients
CEPH_POLICIES = {
    "stateful_server":             (False, True, True, True, True),
    "stateless_server":            (True, True, False, False, False),
    "stateless_registered_server": (True, True, False, False, True),
    "lossless_peer":               (False, False, True, False, True),
    "lossless_peer_reuse":         (False, False, True, True, True),
    "lossy_client":                (True, False, False, False, True),
    "lossless_client":             (False, False, False, True, True),
}


@pytest.mark.parametrize("kind", sorted(CEPH_POLICIES))
def test_policy_fields_are_cephs(kind):
    p = getattr(Policy, kind)()
    assert (p.lossy, p.server, p.standby, p.resetcheck, p.register_lossy_clients) == CEPH_POLICIES[kind]
    assert p.features_supported == FEATURES_SUPPORTED_DEFAULT
    assert p.features_required == 0
    assert p.throttler_bytes is None and p.throttler_messages is None
    req = getattr(Policy, kind)(RECONNECT_SEQ)
    assert req.features_required == RECONNECT_SEQ
    # adjustable before set_policy, and copies are independent
    q = req.copy()
    q.features_supported &= ~RECONNECT_SEQ
    assert req.features_supported == FEATURES_SUPPORTED_DEFAULT


# a bit the server requires and the client does not offer (any bit of the default set would do)
MISSING = RECONNECT_SEQ


def _client_without_feature(policy: Policy) -> Policy:
    policy.features_supported &= ~MISSING
    return policy


@pytest.mark.parametrize("client_policy", ["lossy_client", "lossless_peer"])
def test_server_requires_a_feature_the_client_lacks(cluster, client_policy):
    lossy = client_policy == "lossy_client"
    server_policy = Policy.stateless_server(MISSING) if lossy else Policy.lossless_peer(MISSING)
    s, rs = cluster.make(EntityName.osd(0), 1001, Config(**CFG), server_policy)
    c, rc = cluster.make(EntityName.client(5) if lossy else EntityName.osd(5), 2002, Config(**CFG),
                         _client_without_feature(getattr(Policy, client_policy)()))
    conn = c.connect_to(OSD, s.get_myaddr())
    conn.send_message(Tagged(1, 0, 0))
    if lossy:
        wait_for(lambda: rc.count("reset", conn) == 1, what="ms_handle_reset after FEATURES",
                 detail=lambda: f"{conn!r} {conn.last_fault}")
        assert conn._closed and conn._proto.state is State.CLOSED
        assert conn._proto.stats["reconnects"] == 0
    else:
        # lossless: fault + backoff, over and over; it never opens
        wait_for(lambda: conn._fault_count >= 3, what="repeated FEATURES faults",
                 detail=lambda: f"{conn!r} {conn.last_fault}")
        assert not conn.is_connected()
        conn.mark_down()
    assert "FEATURES" in (conn.last_fault or ""), conn.last_fault
    # the message never got through, and it was reported rather than silently dropped
    wait_for(lambda: rc.discarded_ids() == [(1, 0, 0)], what="the queued message reported",
             detail=lambda: f"{rc.discarded_ids()}")
    assert rs.received == 0 and rs.count("accept") == 0


def test_client_requires_a_feature_the_server_lacks(cluster):
    s, rs = cluster.make(EntityName.osd(0), 1001, Config(**CFG), _client_without_feature(Policy.stateless_server()))
    c, rc = cluster.make(EntityName.client(5), 2002, Config(**CFG), Policy.lossy_client(MISSING))
    conn = c.connect_to(OSD, s.get_myaddr())
    conn.send_message(Tagged(1, 0, 0))
    wait_for(lambda: rc.count("reset", conn) == 1, what="ms_handle_reset on the client",
             detail=lambda: f"{conn!r} {conn.last_fault}")
    assert "feature" in (conn.last_fault or "").lower(), conn.last_fault
    assert rs.received == 0


# --- lossy client after a fault ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["server_mark_down", "server_socket_shutdown"])
def test_lossy_client_fault_resets_and_does_not_reconnect(cluster, how):
    s, rs = cluster.make(EntityName.osd(0), 1001, Config(**CFG), Policy.stateless_server())
    c, rc = cluster.make(EntityName.client(5), 2002, Config(**CFG), Policy.lossy_client(), bind=None)
    conn = c.connect_to(OSD, s.get_myaddr())
    send_range(conn, 1, range(5))
    wait_for(lambda: rs.n(1) == 5, what="first messages")
    assert perf(s)["msgr_created_connections"] == 1
    (server_end,) = [x for x in s.connections() if not x._closed]
    if how == "server_mark_down":
        server_end.mark_down()
    else:
        server_end._sock.shutdown(socket.SHUT_RDWR)
    wait_for(lambda: rc.count("reset", conn) == 1, what="ms_handle_reset on the lossy client",
             detail=lambda: f"{conn!r} {conn.last_fault}")
    # closed for good: no socket, no timer, no reconnect attempt counted
    assert conn._closed and conn._proto.state is State.CLOSED and conn._sock is None and not conn._timers
    assert conn._proto.stats["reconnects"] == 0 and perf(c)["msgr_reconnects"] == 0
    send_range(conn, 1, range(5, 8))            # on the dead connection: dropped, no reconnect
    # a new connect_to is a new session; the server sees exactly one more connection (not two)
    c2 = c.connect_to(OSD, s.get_myaddr())
    assert c2 is not conn
    send_range(c2, 1, range(3), session=1)
    wait_for(lambda: rs.n(1, 1) == 3, what="delivery on the new session")
    assert rs.ids(1, 1) == [0, 1, 2] and rs.ids(1, 0) == list(range(5))
    assert perf(s)["msgr_created_connections"] == 2
    assert conn._proto.stats["reconnects"] == 0 and perf(c)["msgr_reconnects"] == 0
