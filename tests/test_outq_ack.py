"""OutQueue.ack: a cumulative ACK drops exactly the sent messages with seq <= the acked seq, whatever
the sent list looks like (its fast paths assume ascending, usually consecutive, seqs and check it)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from msgr import Message
from msgr.protocol.outq import OutQueue


def _queue(seqs: list[int]) -> OutQueue:
    q = OutQueue()
    for s in seqs:
        m = Message()
        m.header.seq = s
        q.mark_sent(m)
    return q


@given(st.integers(1, 50), st.lists(st.integers(1, 3), max_size=40), st.integers(-2, 200))
def test_ack_drops_exactly_the_acked_prefix(first: int, gaps: list[int], acked: int) -> None:
    seqs = [first]
    for g in gaps:
        seqs.append(seqs[-1] + g)      # ascending; gaps of 1 are the usual consecutive list
    q = _queue(seqs)
    n = q.ack(acked)
    left = [m.header.seq for m in q.sent]
    assert left == [s for s in seqs if s > acked]
    assert n == len(seqs) - len(left)


def test_ack_of_an_empty_sent_list() -> None:
    assert OutQueue().ack(10) == 0
