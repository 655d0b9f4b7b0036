"""Named regressions: every bug the simulator or the fuzzers found, with its seed or example."""
from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest

from msgr.protocol.states import State
from msgr.sim.chaos import run_seed

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import badinput as B  # noqa: E402


# --- simulator bugs (found by the seed sweep while building it) -------------------------------------
def test_seed_0_connect_reset_before_accept_reports_a_failed_connect():
    """A socket reset between connect() and the accept left the client waiting forever (stuck CONNECTING)."""
    run_seed(0)


def test_seed_748_lossless_peer_mark_down_redelivers_by_design():
    """osd.0 marks its session down; osd.1's lossless reconnect is a replace with in_seq 0, so unacked
    messages come again on the new session (Ceph's lossless_peer semantics, no resetcheck): the oracle
    allows it only across sessions after a mark_down by the receiver."""
    run_seed(748)


def test_seed_171_stateful_server_waits_in_standby_for_a_client_that_marked_down():
    """A server never reconnects: messages queued to a client that dropped its session stay queued."""
    run_seed(171)


def test_seed_3_header_crc_must_be_cluster_wide():
    """ms_crc_header differing between peers faults every message (no flag tells the receiver): the
    chaos cluster now draws it once for all endpoints, as a Ceph cluster configures it."""
    run_seed(3)


def test_seed_1002533_adopt_while_a_connect_is_in_flight_drops_that_connect():
    """A lossless replace hit a session whose reconnect was still in flight; the sim kept the connect
    alive, so its completion stole the adopted socket (the peer read a connect reply as a banner and
    the other client waited forever in CONNECTING_WAIT_CONNECT_REPLY). Found by the long sweep."""
    run_seed(1002533, steps=80)


def test_seed_1001203_replies_only_on_connections_the_application_was_told_about():
    """The chaos cluster replied on a half-accepted connection (policy not known yet, so not a server
    policy); it then reconnected to the client's port 0 forever. Found by the long sweep."""
    run_seed(1001203, steps=80)


# --- protocol findings -----------------------------------------------------------------------------------
def test_data_len_within_limit_is_allocated_before_it_arrives():
    """Example found by test_fuzz_badinput (data_len=2**31, valid header crc): 54 bytes made the
    receiver allocate the whole claimed segment (protocol_v1._start_direct: bytearray(need)). Now a
    segment above DIRECT_PREALLOC_MAX grows as its bytes arrive. Shown here with 64 MiB."""
    streams = B.record_session()
    off = min(B.prefixes("accept", streams["accept"])[State.OPEN])
    out = B.feed("accept", streams["accept"][:off], B.big_header(front=1, data=64 << 20, seq=99) + b"x")
    assert out.proto.state is State.OPEN_MESSAGE_READ_DATA and not out.faults
    assert out.peak < 2 << 20, f"{out.peak} bytes allocated for 55 bytes received"
    # and the allocation keeps following what arrives: 6 MiB of 64 MiB in, at most twice that held
    proto = out.proto
    tracemalloc.start()
    try:
        piece = bytes(256 << 10)
        for _ in range(24):
            proto.receive_data(piece, 3000)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert proto.state is State.OPEN_MESSAGE_READ_DATA and proto.stats["faults"] == 0
    assert held < 2 * (6 << 20) + (1 << 20), f"{held} bytes held for 6 MiB received"
