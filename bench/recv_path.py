"""Receive-path micro-benchmark: ns per message through one OPEN ProtocolV1, no sockets, no threads.

Two sans-IO ProtocolV1 sessions are connected in memory (msgr.sim.wire_pair); one frames ``n``
messages, and the other's ``get_buffer``/``buffer_updated`` receive those bytes in 64 KiB reads,
as a worker would. The figure is everything the protocol does per message on receive (scan,
limits, throttles, the Message, the delivery action) plus giving the throttles back, and the
garbage collector's gen-0 collections per 10k messages, so each receive-side change can be
measured on its own, without a neighbour's CPU noise or the send side in the figure.

``proto_rtt_ns`` is the protocol's share of a 16 B round trip the same way (two sessions echoing
one message each way in memory), the figure to watch beside ``pymsgr.rtt``; under
``valgrind --tool=callgrind`` its instruction count per round trip is repeatable on a noisy machine.

Run: ``python -m bench.recv_path [--quick]``; the harness calls ``run()``.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

from msgr import crc as msgr_crc
from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.message import Message
from msgr.policy import Policy
from msgr.protocol.actions import Deliver
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.sim.fakehost import FakeHost
from msgr.sim.wire_pair import WireNet

READ = 64 * 1024


class _MRecvBench(Message):
    TYPE = 0x7F11


def _open_pair(crc: bool) -> tuple[ProtocolV1, ProtocolV1]:
    cfg = Config(ms_crc_data=crc, ms_crc_header=crc)
    net = WireNet(seed=1)
    a_addr, b_addr = EntityAddr.parse("v1:10.0.0.1:6800/1"), EntityAddr.parse("v1:10.0.0.2:6800/2")
    a = net.add_host(FakeHost(EntityName.osd(1), a_addr, config=cfg, default_policy=Policy.lossless_peer()))
    b = net.add_host(FakeHost(EntityName.osd(2), b_addr, config=cfg, default_policy=Policy.lossless_peer()))
    p = net.connect(a, b_addr, EntityName.TYPE_OSD)
    net.run(until=lambda: p.is_connected() and any(x.host is b and x.is_connected() for x in net.protos))
    s = next(x for x in net.protos if x.host is b and x.is_connected())
    return p, s


def _delivered(acts: list) -> list[Message]:
    return [m for act in acts if type(act) is Deliver for m in act.msgs]


def recv_ns_per_msg(size: int, n: int, crc: bool = True, rounds: int = 5, per_read: int = 0,
                    sessions: int = 1) -> tuple[float, float]:
    """(best ns per message, gen-0 collections per 10k messages in that round); ``per_read``
    messages arrive per read (0: as many as fill 64 KiB), 1 being a round trip's receive;
    ``sessions`` receiving sessions take turns (one worker serving both ends of a round trip)."""
    pairs = [_open_pair(crc) for _ in range(sessions)]
    per = n // sessions
    for p, _s in pairs:
        for _ in range(per):
            m = _MRecvBench()
            m.front = bytes(size)
            p.send_message(m, 0)
    wires = [memoryview(b"".join(bytes(x) for x in p.take_output())) for p, _s in pairs]
    total = len(wires[0])
    read = READ if not per_read else per_read * (total // per)
    n = per * sessions
    best, best_gc = float("inf"), 0.0
    for _ in range(rounds):
        for _p, s in pairs:
            s.in_seq = 0                  # the same seqs again are new messages
        got = 0
        g0 = gc.get_stats()[0]["collections"]
        t0 = time.perf_counter()
        off = 0
        while off < total:
            for (_p, s), wire in zip(pairs, wires, strict=True):
                buf = s.get_buffer()
                k = min(len(buf), total - off, read)
                buf[:k] = wire[off:off + k]
                for msg in _delivered(s.buffer_updated(k, 0)):
                    msg._release_throttles()   # what dispatch does after each message
                    got += 1
            off += k
        dt = time.perf_counter() - t0
        if got != n:
            raise RuntimeError(f"delivered {got} of {n}")
        if dt < best:
            best, best_gc = dt, (gc.get_stats()[0]["collections"] - g0) * 10_000 / n
    return best / n * 1e9, best_gc


def proto_rtt_ns(n: int, crc: bool = True, rounds: int = 5) -> tuple[float, float]:
    """(best ns per round trip, gen-0 collections per 10k round trips) of the protocol's share of
    a 16 B round trip: two OPEN sessions in memory, each turn one side takes its output (the
    message and the ACK of the last one), the other reads it in one read, gives the throttles
    back and queues a reply, as a fast-dispatching echo server and its client do. No sockets,
    threads or event loop: what ``pymsgr.rtt`` pays in the sans-IO protocol."""
    p, s = _open_pair(crc)

    def half(src: ProtocolV1, dst: ProtocolV1) -> int:
        got = 0
        for b in src.take_output():
            buf = dst.get_buffer()
            k = len(b)
            buf[:k] = b
            for msg in _delivered(dst.buffer_updated(k, 0)):
                msg._release_throttles()
                reply = _MRecvBench()
                reply.front = msg.front
                dst.send_message(reply, 0)
                got += 1
        return got

    first = _MRecvBench()
    first.front = bytes(16)
    p.send_message(first, 0)
    best, best_gc = float("inf"), 0.0
    for _ in range(rounds):
        g0 = gc.get_stats()[0]["collections"]
        t0 = time.perf_counter()
        got = 0
        for _ in range(n):
            got += half(p, s) + half(s, p)
        dt = time.perf_counter() - t0
        if got != 2 * n:
            raise RuntimeError(f"delivered {got} of {2 * n}")
        if dt < best:
            best, best_gc = dt, (gc.get_stats()[0]["collections"] - g0) * 10_000 / n
    return best / n * 1e9, best_gc


def run(quick: bool = False) -> list[dict]:
    rows = []
    n = 2_000 if quick else 20_000
    for size in (16, 4096):
        ns, gen0 = recv_ns_per_msg(size, n, rounds=2 if quick else 5)
        rows.append({"bench": "recv_path", "metric": "recv_ns_per_msg", "impl": msgr_crc.BACKEND,
                     "size": size, "value": round(ns, 1), "unit": "ns/msg",
                     "gc_gen0_per_10k": round(gen0, 1)})
    # a round trip's receive: one message per read, so the per-read costs show
    ns, gen0 = recv_ns_per_msg(16, n // 4, rounds=2 if quick else 5, per_read=1)
    rows.append({"bench": "recv_path", "metric": "recv_one_per_read_ns", "impl": msgr_crc.BACKEND,
                 "size": 16, "value": round(ns, 1), "unit": "ns/msg", "gc_gen0_per_10k": round(gen0, 1)})
    # the same with two sessions taking turns on this thread (both ends of a round trip, one worker)
    ns, gen0 = recv_ns_per_msg(16, n // 4, rounds=2 if quick else 5, per_read=1, sessions=2)
    rows.append({"bench": "recv_path", "metric": "recv_one_per_read_2sessions_ns", "impl": msgr_crc.BACKEND,
                 "size": 16, "value": round(ns, 1), "unit": "ns/msg", "gc_gen0_per_10k": round(gen0, 1)})
    # the protocol's share of a round trip (both ends, one message each way, lossless acks)
    ns, gen0 = proto_rtt_ns(n // 10, rounds=2 if quick else 5)
    rows.append({"bench": "recv_path", "metric": "proto_rtt_ns", "impl": msgr_crc.BACKEND,
                 "size": 16, "value": round(ns, 1), "unit": "ns/rt", "gc_gen0_per_10k": round(gen0, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    for r in run(args.quick):
        print(f"{r['metric']} {r['size']:>5} B  {r['value']:8.1f} {r['unit']}  "
              f"gen0/10k {r['gc_gen0_per_10k']}  ({r['impl']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
