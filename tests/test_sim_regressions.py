"""Named regressions: every bug the simulator or the fuzzers found, with its seed or example."""
from __future__ import annotations

import os
import random
import sys
import tracemalloc
from pathlib import Path

import pytest

from msgr.config import Config
from msgr.entity import EntityName
from msgr.policy import Policy
from msgr.protocol.actions import ConnEvent
from msgr.protocol.states import State
from msgr.sim.chaos import make_message, parse_message, run_seed
from msgr.sim.network import SimNetwork

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


# --- found once the simulator modelled workers (msgr/sim/worker.py) --------------------------------------
@pytest.mark.parametrize("seed, workers", [(33, 3), (6, 3), (351, 3), (264, 1), (383, 2)])
def test_lossy_replace_stops_the_existing_session_even_mid_connect(seed, workers):
    """hb-peers (lossy_client both ways, both bound): a connection race made the accepting side replace
    its own lossy session while that session's connect was in flight. StopExisting was performed as a
    socket error, and a lossy fault during the connect does not close (it backs off and retries): the
    session, already unregistered by the handshake, kept its socket, opened another one over it (the
    owner-contract anomaly) and became a second session to the same peer. Ceph's replace() stops the
    lossy existing session whatever its state, with a reset callback (fault_replaced)."""
    run_seed(seed, workers=workers)


# --- two lossless_peer osds connecting at once, streaming both ways under socket resets ----------------------
LONG = os.environ.get("MSGR_LONG", "") not in ("", "0")


def osd_pair_both_ways(seed: int, p_reset: float, steps: int = 2000,
                       workers: int = 0) -> tuple[SimNetwork, list, dict[int, int]]:
    """The scenario of tests/test_races.py's seed-35 regression (same draws, so seeds carry over): two
    lossless_peer osds connect to each other at once and stream both ways; each step resets a random live
    socket with probability ``p_reset``; ms_max_backoff is Ceph's 15 s. Returns (net, endpoints, sent)."""
    net = SimNetwork(seed)
    rng = random.Random(seed * 7 + 1)
    eps = [net.add_endpoint(EntityName.osd(i), Config(ms_initial_backoff=rng.choice((0.01, 0.05, 0.2)),
                                                      ms_max_backoff=15.0),
                            policies={EntityName.TYPE_OSD: Policy.lossless_peer()},
                            default_policy=Policy.lossless_peer(), workers=workers) for i in range(2)]
    for ep, peer in ((eps[0], eps[1]), (eps[1], eps[0])):
        ep.connect_to(EntityName.TYPE_OSD, peer.get_myaddr())
    n = {1: 0, 2: 0}
    for _ in range(steps):
        for who, ep, peer in ((1, eps[0], eps[1]), (2, eps[1], eps[0])):
            c = ep.connect_to(EntityName.TYPE_OSD, peer.get_myaddr())
            if rng.random() < 0.7:
                n[who] += 1
                c.send_message(make_message(who, n[who], 127, 10))
        if rng.random() < p_reset:
            live = net.live_sockets()
            if live:
                net.reset_socket(live[rng.randrange(len(live))])
        net.run_for(rng.choice((50, 200, 1000, 3000)))
    net.run_for(40_000_000)
    return net, eps, n


def exact_delivery_problems(eps: list, sent: dict[int, int]) -> list[str]:
    """The oracle: each stream arrives once and in order on its receiving session. Only where a session
    reset was reported (BAD_RESET / BAD_REMOTE_RESET, or messages reported as Discarded) may a message be
    missing, and then only one the sender was told about; a duplicate is never excused."""
    problems = []
    resets = sum(1 for ep in eps for r in ep.records
                 if (r.kind == "notify" and r.data in (ConnEvent.BAD_RESET, ConnEvent.BAD_REMOTE_RESET))
                 or r.kind == "discarded")
    for who, ep in ((1, eps[1]), (2, eps[0])):
        per_session: dict[int, list[int]] = {}
        for r in ep.records_of("deliver"):
            uid, k = parse_message(r.data)
            if uid == who:
                per_session.setdefault(r.conn_uid, []).append(k)
        got = [k for ks in per_session.values() for k in ks]
        for conn, ks in per_session.items():
            if any(b <= a for a, b in zip(ks, ks[1:], strict=False)):
                dup = len(ks) - len(set(ks))
                problems.append(f"stream {who} on session #{conn}: {dup} duplicate(s) / out of order")
        missing = set(range(1, sent[who] + 1)) - set(got)
        if len(got) != len(set(got)):
            problems.append(f"stream {who}: {len(got) - len(set(got))} delivered more than once in all")
        if missing:
            told = {parse_message(m)[1] for e in eps for r in e.records_of("discarded") for m in r.data
                    if parse_message(m)[0] == who}
            if not resets or missing - told:
                problems.append(f"stream {who}: {len(missing - told)} lost unreported (first {min(missing)})")
    return problems


@pytest.mark.parametrize("seed, p_reset, dups_before_fix",
                         [(147, 0.1, 29), (187, 0.1, 1), (92, 0.3, 44), (134, 0.3, 41)])
def test_stale_reset_from_peer_must_not_make_a_later_open_answer_ready(seed, p_reset, dups_before_fix):
    """A row-14 replace ("peer reset": connect_seq 0 against a session whose connect_seq a fault had
    bumped) marked the session reset-from-peer; its adopted socket died before the retry connect, and
    the mark outlived that fault. Much later an ordinary replace opened the session with READY instead
    of SEQ: in_seq went to 0 and the peer's unacked, requeued messages were delivered a second time on
    the same session (``dups_before_fix`` of them). Ceph's fault() clears is_reset_from_peer."""
    _net, eps, sent = osd_pair_both_ways(seed, p_reset)
    assert exact_delivery_problems(eps, sent) == []


@pytest.mark.parametrize("p_reset", [0.1, 0.3])
def test_osd_pair_both_ways_sweep_delivers_exactly_once(p_reset):
    """A sweep of the scenario (MSGR_LONG=1: 500 seeds per reset rate, else 8)."""
    seeds = range(1000, 1500) if LONG else range(1000, 1008)
    bad = {}
    for seed in seeds:
        _net, eps, sent = osd_pair_both_ways(seed, p_reset)
        problems = exact_delivery_problems(eps, sent)
        if problems:
            bad[seed] = problems
    assert not bad, f"{len(bad)} of {len(seeds)} seeds broke exact delivery: {dict(list(bad.items())[:3])}"


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_osd_pair_both_ways_with_workers_delivers_exactly_once(workers):
    """The same scenario with simulated workers (posted sends, adopts and pokes interleaved by the seed);
    MSGR_LONG=1: 200 seeds per worker count, else 4."""
    seeds = range(2000, 2200) if LONG else range(2000, 2004)
    bad = {}
    for seed in seeds:
        net, eps, sent = osd_pair_both_ways(seed, 0.3, workers=workers)
        problems = exact_delivery_problems(eps, sent) + [a for ep in eps for a in ep.anomalies]
        if problems:
            bad[seed] = problems
    assert not bad, f"{len(bad)} of {len(seeds)} seeds broke exact delivery: {dict(list(bad.items())[:3])}"


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
