"""msgr/segment_crc.py + csrc/crc_job.c: a large segment's CRC summed by the helper thread as it
arrives equals crc32c(0, segment), and the receive path checks it exactly as before: a wrong CRC in
a directly read segment faults the connection and delivers nothing (on every backend)."""
from __future__ import annotations

import os
import random
import threading

import pytest
from test_protocol_open import _msg_frame, _open_server, _stream

from msgr import segment_crc
from msgr.config import Config
from msgr.crc import crc32c
from msgr.protocol.actions import Deliver, Fault
from msgr.protocol.protocol_v1 import DIRECT_MIN, DIRECT_PREALLOC_MAX
from msgr.protocol.states import State
from msgr.segment_crc import OFFLOAD_MIN, SegmentCrc

needs_c = pytest.mark.skipif(segment_crc._lib is None, reason="the helper thread is part of the C module")


def _pieces(rng, data, sizes=(1, 7, 4096, 65536, 1 << 20)):
    out, off = [], 0
    while off < len(data):
        n = rng.choice(sizes)
        out.append(memoryview(data)[off:off + n])
        off += n
    return out


def test_only_large_segments_with_the_c_module_get_one():
    assert segment_crc.segment_crc(OFFLOAD_MIN - 1) is None
    big = segment_crc.segment_crc(OFFLOAD_MIN)
    assert (big is None) == (segment_crc._lib is None)


@needs_c
@pytest.mark.parametrize("size", [1, OFFLOAD_MIN, 3 * OFFLOAD_MIN + 5])
def test_value_is_the_crc_of_the_pieces_in_order(size):
    rng = random.Random(size)
    data = bytearray(rng.randbytes(size))
    acc = SegmentCrc()
    for p in _pieces(rng, data):
        acc.feed(p)
    assert acc.value() == crc32c(0, data) and acc.value() == crc32c(0, data)
    assert not acc._pins            # the buffers are let go once summed


@needs_c
def test_more_pieces_than_the_ring_holds_wait_for_room():
    rng = random.Random(3)
    data = bytearray(rng.randbytes(5000 * 64))
    acc = SegmentCrc()
    for p in _pieces(rng, data, (64,)):
        acc.feed(p)
    assert acc.value() == crc32c(0, data)


@needs_c
def test_many_segments_from_many_threads_interleave_on_the_helper():
    results = []

    def one(seed):
        rng = random.Random(seed)
        data = bytearray(rng.randbytes(OFFLOAD_MIN + seed * 1000))
        for _ in range(3):
            acc = SegmentCrc()
            for p in _pieces(rng, data):
                acc.feed(p)
            results.append(acc.value() == crc32c(0, data))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [True] * 18


@needs_c
def test_dropped_mid_segment_waits_for_the_helper_before_letting_go():
    data = bytearray(random.Random(4).randbytes(4 * OFFLOAD_MIN))
    acc = SegmentCrc()      # never completed, as when a read is cut short by a fault
    for p in _pieces(random.Random(5), data, (1 << 16,)):
        acc.feed(p)
    job = acc._job
    del acc                               # __del__ waits: nothing is still queued on these buffers
    assert job.done == job.queued > 0


@needs_c
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_job_from_before_a_fork_is_lost_in_the_child_and_the_helper_restarts():
    data = bytearray(random.Random(6).randbytes(2 * OFFLOAD_MIN))
    acc = SegmentCrc()
    acc.feed(memoryview(data))           # queued (not the last piece)
    assert acc.value() is not None
    acc2 = SegmentCrc()
    acc2.feed(memoryview(data))
    pid = os.fork()
    if pid == 0:   # the child: the helper thread is gone; the old job is reported lost
        ok = acc2.value() is None
        fresh = SegmentCrc()
        fresh.feed(memoryview(data))
        fresh.feed(b"x")
        ok = ok and fresh.value() == crc32c(0, bytes(data) + b"x")
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert acc2.value() is not None


@pytest.mark.parametrize("bad", [None, "front", "data"])
@pytest.mark.parametrize("size", [DIRECT_MIN + 1, OFFLOAD_MIN + 3, DIRECT_PREALLOC_MAX + 5])
def test_direct_segment_with_a_wrong_crc_faults_and_delivers_nothing(bad, size):
    host, s = _open_server()
    rng = random.Random(size)
    front, data = rng.randbytes(size), rng.randbytes(size + 11)
    wire = _msg_frame(1, front, b"", data, bad=bad) + _msg_frame(2, b"after")
    acts, off, summed = [], 0, 0
    while off < len(wire) and s.state is not State.CLOSED:
        buf = s.get_buffer()
        k = min(len(buf), rng.choice([100, 65536, 1 << 20]), len(wire) - off)
        buf[:k] = wire[off:off + k]
        off += k
        acts += s.buffer_updated(k, 0)
        summed += s._direct_crc is not None
    got = [m for a in acts if isinstance(a, Deliver) for m in a.msgs]
    faults = [a for a in acts if isinstance(a, Fault)]
    if bad is None:
        assert [m.header.seq for m in got] == [1, 2] and not faults
        assert got[0].front == front and got[0].data == data
    else:
        assert got == [] and len(faults) == 1
        assert type(faults[0].error).__name__ == "BadCrcError" and bad in str(faults[0].error)
    assert (summed > 0) == (size >= OFFLOAD_MIN and segment_crc._lib is not None)


def test_no_crc_configured_sums_nothing():
    host, s = _open_server(config=Config(ms_crc_header=False, ms_crc_data=False))
    wire = _msg_frame(1, b"f" * OFFLOAD_MIN, b"", b"d" * OFFLOAD_MIN, bad="data")
    _stream(s, wire[:200], 1 << 20, now=0)
    assert s._direct is not None and s._direct_crc is None
    got = _stream(s, wire[200:], 1 << 20, now=0)
    assert [m.header.seq for m in got] == [1]
