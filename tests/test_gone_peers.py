"""GonePeers: the record behind row 8a (stale connects) keeps the highest seq per peer and stays bounded."""
from __future__ import annotations

import pytest

from msgr.entity import EntityAddr
from msgr.protocol.gone_peers import GonePeers


def _addr(nonce: int) -> EntityAddr:
    return EntityAddr.parse(f"v1:127.0.0.1:6800/{nonce}")


def test_keeps_the_highest_seq_of_a_peer() -> None:
    g = GonePeers()
    g.remember(_addr(1), 7)
    g.remember(_addr(1), 3)
    assert g.highest(_addr(1)) == 7
    g.remember(_addr(1), 9)
    assert g.highest(_addr(1)) == 9
    assert g.highest(_addr(2)) == 0


def test_a_server_seeing_a_new_peer_per_session_stays_bounded() -> None:
    g = GonePeers(capacity=100)
    for nonce in range(10_000):
        g.remember(_addr(nonce), nonce + 1)
    assert len(g) == 100
    assert g.highest(_addr(9_999)) == 10_000   # the most recent ones are kept
    assert g.highest(_addr(0)) == 0            # the oldest are forgotten: plain rules apply


def test_a_peer_ending_again_counts_as_recent() -> None:
    g = GonePeers(capacity=2)
    g.remember(_addr(1), 5)
    g.remember(_addr(2), 5)
    g.remember(_addr(1), 6)   # 1 ended again: 2 is now the oldest
    g.remember(_addr(3), 5)
    assert g.highest(_addr(1)) == 6 and g.highest(_addr(2)) == 0 and g.highest(_addr(3)) == 5


def test_capacity_must_hold_one() -> None:
    with pytest.raises(ValueError):
        GonePeers(capacity=0)
