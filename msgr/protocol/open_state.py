"""The OPEN state: tag dispatch, the message read path, acks and keepalives.

Read path of one message (states of ``TRANSITIONS``): header (53 bytes, or
334 without NOSRCADDR; CRC checked at once when ms_crc_header) -> length
limits checked BEFORE anything is allocated -> the three receive throttles
(policy message count, policy bytes, messenger dispatch bytes; when one is
full, reading stops and THROTTLE_RETRY fires in 1 ms) -> front, middle,
data (a large segment is read straight into its own buffer) -> footer
(COMPLETE flag, front/middle/data CRCs) -> decode -> seq check -> Deliver.

Batch fast path (``_open_batch``, run by ``_run`` in OPEN): one ``_cwire.scan_pinned``
call checks and describes every complete small frame in the receive buffer; each MSG
record gets the same limits, throttles, decode and seq rule without walking the states.
What it cannot finish (large body, full throttle, CLOSE, bad input) stays at ``_rpos``.

Write path: control frames (keepalive acks), a pending keepalive, every queued message
(framed into one arena per batch, outq.Framer), then one cumulative ACK (lossless).
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

from msgr import _cwire
from msgr._typing import BytesLike
from msgr.crc import crc32c
from msgr.entity import EntityName
from msgr.errors import BadCrcError, BadLengthError, BadTagError, DecodeError
from msgr.features import MSG_AUTH, MSGR_KEEPALIVE2, NOSRCADDR
from msgr.message import decode_message, decode_record
from msgr.protocol.actions import Action, ArmTimer, ConnEvent, Deliver, Notify, TimerKind
from msgr.protocol.base import Blocked, ProtocolBase
from msgr.protocol.outq import Framer
from msgr.protocol.states import State
from msgr.protocol.states import States as S  # no Enum class hook per read (states.States)
from msgr.segment_crc import SegmentCrc, segment_crc
from msgr.throttle import Throttle
from msgr.wire import (
    FOOTER_COMPLETE,
    FOOTER_NOCRC,
    MsgFooter,
    MsgHeader,
    MsgHeaderOld,
    Tag,
    pack_ack,
    pack_keepalive2,
    unpack_timespec,
    unpack_u64,
)

_KEEPALIVE = bytes((Tag.KEEPALIVE,))
_scan_pinned = _cwire.scan_pinned
SCAN_FULL, SCAN_NEED_MORE = _cwire.SCAN_FULL, _cwire.SCAN_NEED_MORE
_LENS = struct.Struct("<III").unpack_from   # front/middle/data_len at frame offset 23
#: Bodies up to this size are parsed by the batch path; larger ones take the state path, whose
#: segment states read a big segment straight into its own buffer (protocol_v1.DIRECT_MIN).
BATCH_MAX_INLINE = 8 * 1024
BATCH_MAX_FRAMES = 64
_KEEPALIVE2_ACK = bytes((Tag.KEEPALIVE2_ACK,))
THROTTLE_RETRY_US = 1000

#: OPEN tag byte -> next state (None: handled in place)
TAG_NEXT: dict[int, State | None] = {
    Tag.MSG: S.OPEN_MESSAGE_HEADER,
    Tag.ACK: S.OPEN_TAG_ACK,
    Tag.KEEPALIVE2: S.OPEN_KEEPALIVE2,
    Tag.KEEPALIVE2_ACK: S.OPEN_KEEPALIVE2_ACK,
    Tag.KEEPALIVE: None,
    Tag.CLOSE: None,
}


class OpenMixin(ProtocolBase):
    """OPEN-state readers and the write path of :class:`~msgr.protocol.protocol_v1.ProtocolV1`."""

    def _init_open(self) -> None:
        self._header_size = 53
        self._footer_size = 21
        self._scan_flags = 0              # _cwire.scan flags, set with the footer size in _ready
        self._hdr: MsgHeader | None = None
        self._seg_len = 0
        self._segs: list[bytes | bytearray] = []
        self._seg_sums: list[SegmentCrc | None] = []   # beside _segs: CRCs summed as a segment arrived
        self._throttled: list[tuple[Throttle, int]] = []    # (throttle, count) taken for the message being read
        self._batch = False

    # --- entering OPEN (both roles) -------------------------------------------------------------------
    def _ready(self, now_us: int, acts: list[Action], event: ConnEvent | None) -> None:
        f = self.features
        self._header_size = 53 if f & NOSRCADDR == NOSRCADDR else 334
        self._footer_size = 21 if f & MSG_AUTH == MSG_AUTH else 13
        self._scan_flags = _cwire.scan_flags(self._crc_header, self._crc_data, self._footer_size == 21)
        # the C scanner knows the 53-byte header only, and checks no signatures (cephx: the state path)
        self._batch = self._header_size == 53 and self._signer is None
        self._framer = None   # made by the first write of a message (_make_framer): many sessions send none
        self._acked_seq = self.in_seq
        self._once_ready = True
        self._backoff_us = 0
        self._to(S.OPEN)
        if event is not None:
            acts.append(Notify(event))

    # --- tags -------------------------------------------------------------------------------------------
    def _read_tag(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> Blocked | None:
        tag = buf[off]
        if tag not in TAG_NEXT:
            raise BadTagError(f"tag {tag} is not valid in the open state")
        nxt = TAG_NEXT[tag]
        if nxt is not None:
            self._to(nxt)
        elif tag == Tag.KEEPALIVE:
            self.last_keepalive_us = now_us
        else:  # CLOSE: the peer ends the session
            acts.extend(self._close("peer sent CLOSE", now_us, reset=True))
            return self._blocked()
        return None

    def _read_ack(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._outq.ack(unpack_u64(buf, off))
        self._to(S.OPEN)

    def _read_keepalive2(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self.last_keepalive_us = now_us
        self._out.append(_KEEPALIVE2_ACK + bytes(buf[off:off + 8]))
        self._to(S.OPEN)

    def _read_keepalive2_ack(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self.last_keepalive_ack_stamp = unpack_timespec(buf, off)
        self.last_keepalive_ack_us = now_us
        self._to(S.OPEN)

    # --- a message -------------------------------------------------------------------------------------
    def _read_message_header(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        if n == 53:
            h = MsgHeader(*_cwire.parse_header(buf, off, self._crc_header))
        else:
            h = MsgHeaderOld.unpack(buf, off, self._crc_header).to_header()
        cfg = self.host.config
        if h.front_len > cfg.ms_max_message_front_len:
            raise BadLengthError(f"front_len {h.front_len} > ms_max_message_front_len")
        if h.middle_len > cfg.ms_max_message_middle_len:
            raise BadLengthError(f"middle_len {h.middle_len} > ms_max_message_middle_len")
        if h.data_len > cfg.ms_max_message_data_len:
            raise BadLengthError(f"data_len {h.data_len} > ms_max_message_data_len")
        self._hdr = h
        self._segs = []
        self._seg_sums = []
        self._to(S.OPEN_MESSAGE_THROTTLE_MESSAGE)

    def _take(self, throttle: Throttle | None, count: int, now_us: int, acts: list[Action]) -> bool:
        if throttle is None or count == 0:
            return True
        if throttle.try_get(count):
            self._throttled.append((throttle, count))
            return True
        self.wants_read = False
        self.stats["throttle_waits"] += 1
        acts.append(ArmTimer(TimerKind.THROTTLE_RETRY, THROTTLE_RETRY_US))
        return False

    def _throttle_message(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> Blocked | None:
        if not self._take(self.policy.throttler_messages, 1, now_us, acts):
            return self._blocked()
        self._to(S.OPEN_MESSAGE_THROTTLE_BYTES)
        return None

    def _throttle_bytes(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> Blocked | None:
        h = self._hdr
        assert h is not None                     # read in OPEN_MESSAGE_HEADER
        if not self._take(self.policy.throttler_bytes, h.front_len + h.middle_len + h.data_len, now_us, acts):
            return self._blocked()
        self._to(S.OPEN_MESSAGE_THROTTLE_DISPATCH_QUEUE)
        return None

    def _throttle_dispatch_queue(self, buf: memoryview, off: int, n: int, now_us: int,
                                 acts: list[Action]) -> Blocked | None:
        h = self._hdr
        assert h is not None
        if not self._take(self.host.dispatch_throttle, h.front_len + h.middle_len + h.data_len, now_us, acts):
            return self._blocked()
        self.wants_read = True
        self._seg_len = h.front_len
        self._to(S.OPEN_MESSAGE_READ_FRONT)
        return None

    def _read_segment(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._segment_done(bytes(buf[off:off + n]) if n else b"", now_us, acts)

    def _segment_crc(self, size: int) -> SegmentCrc | None:
        """For a segment about to be read straight into its own buffer: its CRC, summed by the helper
        thread as its bytes arrive (msgr/segment_crc.py), if the footer check will want it
        (front/middle: ms_crc_header; data: ms_crc_data) and it is large enough to be worth it."""
        check = self._crc_data if self.state is S.OPEN_MESSAGE_READ_DATA else self._crc_header
        return segment_crc(size) if check else None

    def _segment_done(self, seg: bytes | bytearray, now_us: int, acts: list[Action],
                      crc: SegmentCrc | None = None) -> None:
        """A front/middle/data segment is complete (from the receive buffer or read directly;
        ``crc``: its CRC summed while it arrived)."""
        segs = self._segs
        segs.append(seg)
        self._seg_sums.append(crc)
        st = self.state
        if st is S.OPEN_MESSAGE_READ_FRONT:
            assert self._hdr is not None
            self._seg_len = self._hdr.middle_len
            self._to(S.OPEN_MESSAGE_READ_MIDDLE)
            if self._seg_len:
                return
            segs.append(b"")          # an empty middle: pass its state without running a reader
            self._seg_sums.append(None)
            st = S.OPEN_MESSAGE_READ_MIDDLE
        if st is S.OPEN_MESSAGE_READ_MIDDLE:
            self._to(S.OPEN_MESSAGE_READ_DATA_PREPARE)
        else:
            self._to(S.OPEN_MESSAGE_READ_FOOTER_AND_DISPATCH)

    def _read_data_prepare(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        # data_off alignment is a C++ page concern; a bytearray needs none
        assert self._hdr is not None
        self._seg_len = self._hdr.data_len
        self._to(S.OPEN_MESSAGE_READ_DATA)
        if not self._seg_len:
            self._segment_done(b"", now_us, acts)   # an empty data segment: no reader run

    def _read_footer_and_dispatch(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        fc, mc, dc, sig, flags = _cwire.parse_footer(buf, off, n == 21)
        front, middle, data = self._segs
        fcrc, mcrc, dcrc = self._seg_sums
        self._segs = []
        self._seg_sums = []
        if not flags & FOOTER_COMPLETE:
            raise DecodeError("message footer lacks the COMPLETE flag (the sender aborted it)")
        if self._crc_header:
            if (_crc_of(front, fcrc) if front else 0) != fc:
                raise BadCrcError("front", fc, _crc_of(front, fcrc))
            if (_crc_of(middle, mcrc) if middle else 0) != mc:
                raise BadCrcError("middle", mc, _crc_of(middle, mcrc))
        if self._crc_data and not flags & FOOTER_NOCRC:
            if (_crc_of(data, dcrc) if data else 0) != dc:
                raise BadCrcError("data", dc, _crc_of(data, dcrc))
        h = self._hdr
        assert h is not None
        if self._signer is not None:
            self._signer.check(h.crc, fc, len(front), mc, len(middle), dc, len(data), h.seq, sig)
        self._hdr = None
        throttled, self._throttled = self._throttled, []
        try:
            msg = decode_message(h, front, middle, data, MsgFooter(fc, mc, dc, sig, flags), self.connection, now_us)
        except BaseException:
            _give_back(throttled)   # every exit gives back what this message took
            raise
        self._to(S.OPEN)
        if h.seq <= self.in_seq:
            for t, c in throttled:   # a duplicate after a reconnect: dropped, no fault
                t.put(c)
            return
        self.in_seq = h.seq
        pn = self.peer_name
        if pn is None or pn.num != h.src_num or pn.type != h.src_type:
            self.peer_name = EntityName(h.src_type, h.src_num)
        msg._throttled = throttled or None
        self.stats["msgs_in"] += 1
        acts.append(Deliver([msg]))

    # --- batch fast path: OPEN -> (complete frames in buffer) -> dispatch ------------------------------------
    def _open_batch(self, now_us: int, acts: list[Action]) -> bool:
        """Handle every complete small frame at ``_rpos``, one C scan per 64 frames (same checks,
        order and results as the state path). True: the rest is an incomplete small frame (wait in
        OPEN); False: the state path takes the frame at ``_rpos`` (large body, full throttle,
        CLOSE, a length over the limits, bad input: it raises the typed error).

        Per message: limits, the three throttles (Ceph's order, given back on any stop), decode
        (Message built once, footer left as the record), seq rule; the messages of the whole call
        go out in one Deliver. The throttles are taken for every message of a scan at once when
        all of them fit (``_reserve_scan``), else message by message as the state path does. One
        frame for the scan loop and the records (one message per read is a round trip's case)."""
        pos, rend = self._rpos, self._rend
        if pos == rend:
            return True
        pinned = self._rpin
        if pinned is None:
            pinned = self._rpin = _cwire.pin(self._rbuf)   # once per receive buffer, not per scan
        flags = self._scan_flags
        got: Deliver | None = None
        in_seq = self.in_seq
        # (messages, bytes) still reserved for the rest of a scan; given back on any stop
        left_m = left_b = 0
        tm = tb = td = None
        try:
            while True:
                status, end, recs, nmsgs, nbytes = _scan_pinned(pinned, pos, rend, flags, BATCH_MAX_INLINE)
                if not nmsgs:
                    if recs:
                        self._batch_control(recs, now_us)   # acks and keepalives only (moves _rpos)
                else:
                    if got is None:   # what every message of this call is checked against, read once
                        got = Deliver()
                        rmv = self._rmv
                        host = self.host
                        cfg = host.config
                        max_f, max_m, max_d = cfg.ms_max_message_front_len, cfg.ms_max_message_middle_len, \
                            cfg.ms_max_message_data_len
                        pol = self.policy
                        tm, tb, td = pol.throttler_messages, pol.throttler_bytes, host.dispatch_throttle
                        # the usual policy (no messages/bytes throttle): the dispatch throttle alone, taken
                        # here without a _take_one call
                        td_only = td if tm is None and tb is None else None
                        conn = self.connection
                        pn = self.peer_name
                    if nmsgs > 1:
                        left_m, left_b = _reserve_scan(nmsgs, nbytes, tm, tb, td)
                        # a message's share of the reservation, by size (a scan of one message reserves nothing)
                        pairs: dict[int, tuple[tuple[Throttle, int], ...]] = {}
                    for r in recs:
                        tag = r[0]
                        if tag != 7:
                            if tag == 8:            # an ACK rides behind most replies: no call for it
                                self._outq.ack(r[3])
                            else:
                                self._batch_control((r,), now_us)
                            continue
                        f, m, d = r[8], r[9], r[10]
                        if f > max_f or m > max_m or d > max_d:
                            self._rpos = r[1]
                            return False
                        n = f + m + d
                        if left_m:
                            left_m -= 1
                            left_b -= n
                            throttled = pairs.get(n)
                            if throttled is None:
                                throttled = pairs[n] = _share(tm, tb, td, n)
                        elif td_only is not None and n:
                            if not td_only.try_get(n):
                                self._rpos = r[1]
                                return False        # the state path blocks in THROTTLE_DISPATCH_QUEUE
                            throttled = ((td_only, n),)
                        else:
                            taken = _take_one(tm, tb, td, n)
                            if taken is None:
                                self._rpos = r[1]
                                return False        # the state path blocks in THROTTLE_* as always
                            throttled = taken
                        try:
                            msg = decode_record(r, rmv, conn, now_us)
                        except BaseException:
                            self._rpos = r[1]
                            _give_back(throttled)   # every exit gives back what this message took
                            raise
                        seq = r[3]
                        if seq <= in_seq:
                            _give_back(throttled)   # a duplicate after a reconnect: dropped, no fault
                            continue
                        in_seq = seq
                        if pn is None or r[13] != pn.num or r[12] != pn.type:
                            pn = self.peer_name = EntityName(r[12], r[13])
                        msg._throttled = throttled or None
                        got.append(msg)
                    # every record applied: _rpos moves once per scan, not once per record (each
                    # early return above leaves it at the start of the frame it stopped at)
                    self._rpos = end
                if status == SCAN_FULL:
                    pos = end
                    continue
                if status != SCAN_NEED_MORE or end == rend:
                    return status == SCAN_NEED_MORE
                return self._batch_wait(end, rend)
        finally:
            self.in_seq = in_seq
            if left_m:
                _give_back(_share(tm, tb, td, left_b, left_m))
            if got:
                self.stats["msgs_in"] += len(got)
                acts.append(got)

    def _batch_control(self, recs: Sequence[tuple[int, ...]], now_us: int) -> None:
        """ACK, KEEPALIVE, KEEPALIVE2 and KEEPALIVE2_ACK records (the scanner passes no other
        non-message tag); ``_rpos`` moves past the last."""
        for r in recs:
            tag = r[0]
            if tag == 8:
                self._outq.ack(r[3])
            elif tag == 14:
                self.last_keepalive_us = now_us
                o = r[1] + 1
                self._out.append(_KEEPALIVE2_ACK + self._rmv[o:o + 8].tobytes())
            elif tag == 15:
                self.last_keepalive_ack_stamp = (r[3], r[4])
                self.last_keepalive_ack_us = now_us
            else:  # KEEPALIVE
                self.last_keepalive_us = now_us
            self._rpos = r[1] + r[2]

    def _batch_wait(self, end: int, rend: int) -> bool:
        """An incomplete frame at ``end``: wait in OPEN if it is small and its header passed."""
        rmv = self._rmv
        if rmv[end] != 7:
            self._make_room(9)
            return True
        if rend - end < 1 + 53:
            self._make_room(1 + 53)
            return True
        # the scanner checked the header CRC and that the body is <= BATCH_MAX_INLINE
        f, m, d = _LENS(rmv, end + 23)
        cfg = self.host.config
        if f > cfg.ms_max_message_front_len or m > cfg.ms_max_message_middle_len \
                or d > cfg.ms_max_message_data_len:
            return False                        # the state path raises BadLengthError at once
        self._make_room(1 + 53 + f + m + d + self._footer_size)
        return True

    def _release_partial(self) -> None:
        """Give back the throttles of a message whose read was cut short (fault, replace, close)."""
        throttled, self._throttled = self._throttled, []
        for t, c in throttled:
            t.put(c)
        self._hdr = None
        self._segs = []
        self._seg_sums = []

    # --- write path ---------------------------------------------------------------------------------------
    def _ack_due(self) -> bool:
        return not self.policy.lossy and self.in_seq > self._acked_seq

    def _make_framer(self) -> Framer:
        """The framer of this open session (its features, CRC switches, names and signer are fixed)."""
        me = self.host.my_name
        framer = self._framer = Framer(self.features, self._crc_header, self._crc_data, me.type, me.num,
                                       self.peer_addr.encode_legacy() if self.peer_addr else bytes(136),
                                       self._signer)
        return framer

    def _write_open(self) -> list[BytesLike]:
        """take_output in OPEN with a socket: control frames, a keepalive, the queued messages, the ACK."""
        out, self._out = self._out, []
        if self._keepalive_pending:
            self._keepalive_pending = False
            if self.features & MSGR_KEEPALIVE2 == MSGR_KEEPALIVE2:
                sec, nsec = self.host.wall_clock()
                out.append(pack_keepalive2(sec, nsec))
            else:
                out.append(_KEEPALIVE)
            self.stats["keepalives"] += 1
        stats = self.stats
        q = self._outq
        lossless = not self.policy.lossy
        in_seq = self.in_seq
        ack = in_seq if lossless and in_seq > self._acked_seq else 0   # _ack_due, inlined (once per write)
        if q.count:
            framer = self._framer
            if framer is None:
                framer = self._make_framer()
            seq = q.out_seq
            if q.count == 1:   # a reply: one C call frames it and the ACK (outq.Framer.frame_one)
                msg = q.pop()
                assert msg is not None
                msgs = [msg]
                n, err = framer.frame_one(msg, seq, out, ack)
            else:
                msgs = q.take_all()
                # outq.py: one C call for the small ones, the ACK after them (in their buffer when it can)
                n, err = framer.frame_all(msgs, seq, out, ack)
            q.out_seq = seq + n
            # a message that cannot be framed (bad field) stays queued with the ones after it
            if n < len(msgs):
                q.put_back(msgs[n:])
                del msgs[n:]
            if lossless:
                q.sent.extend(msgs)
            stats["msgs_out"] += n
            if err is not None:
                raise err
        elif ack:
            out.append(pack_ack(in_seq))
        elif not out:
            return out
        if ack:
            self._acked_seq = in_seq
        # as take_output counts what it returns (flush.py waits on it for a lossy session)
        stats["bytes_out"] += len(out[0]) if len(out) == 1 else sum(map(len, out))
        return out




def _crc_of(seg: BytesLike, summed: SegmentCrc | None) -> int:
    """A received segment's CRC-32C: summed while it arrived, else one pass now."""
    crc = summed.value() if summed is not None else None
    return crc32c(0, seg) if crc is None else crc


def _give_back(throttled: Sequence[tuple[Throttle, int]]) -> None:
    for t, c in throttled:   # (throttle, count) pairs taken for one message
        t.put(c)


def _share(tm: Throttle | None, tb: Throttle | None, td: Throttle | None, nbytes: int,
           nmsgs: int = 1) -> tuple[tuple[Throttle, int], ...]:
    """The (throttle, count) pairs ``nmsgs`` messages of ``nbytes`` in all hold, Ceph's order."""
    out: list[tuple[Throttle, int]] = []
    if tm is not None:
        out.append((tm, nmsgs))
    if nbytes:
        if tb is not None:
            out.append((tb, nbytes))
        if td is not None:
            out.append((td, nbytes))
    return tuple(out)


def _take_one(tm: Throttle | None, tb: Throttle | None, td: Throttle | None,
              nbytes: int) -> tuple[tuple[Throttle, int], ...] | None:
    """One message's throttles in Ceph's order (messages, bytes, dispatch queue): what it took,
    or None (having given back what it had taken) when one is full. (_open_batch takes the
    usual policy's dispatch throttle alone itself, without this call.)"""
    taken: list[tuple[Throttle, int]] = []
    if tm is not None:
        if not tm.try_get(1):
            return None
        taken.append((tm, 1))
    if nbytes:
        for t in (tb, td):
            if t is not None:
                if not t.try_get(nbytes):
                    _give_back(taken)
                    return None
                taken.append((t, nbytes))
    return tuple(taken)


def _reserve_scan(k: int, nbytes: int, tm: Throttle | None, tb: Throttle | None,
                  td: Throttle | None) -> tuple[int, int]:
    """Take the throttles for all ``k`` messages (``nbytes`` in all) of a scan at once: (messages,
    bytes) taken, or (0, 0) when they would not all fit (then each message takes its own, in
    order, and the first that does not fit stops the batch as before). All fit exactly when the
    sum fits under each max: with that, every message alone would have been admitted too."""
    taken: list[tuple[Throttle, int]] = []
    for t, c in ((tm, k), (tb, nbytes), (td, nbytes)):
        if t is None or c == 0:
            continue
        mx = t.max
        if mx and (t.current + c > mx or not t.try_get(c)):
            _give_back(taken)
            return 0, 0
        if not mx:
            t.try_get(c)                    # unlimited: always admitted
        taken.append((t, c))
    return k, nbytes
