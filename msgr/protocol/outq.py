"""The send side of a session: priority out queues, the sent list, seq numbers, framing.

Ceph keeps one FIFO per priority and always writes the head of the highest
one. On a lossless session every written message also goes to ``sent``
until the peer acks it; on a fault the sent list goes back to the front of
the HIGHEST queue with ``out_seq`` rewound, so the same messages are re-sent
with the same seqs (docs/PROTOCOL.md §9.2). ``discard_requeued_up_to``
then drops what the peer already had (its in_seq from the SEQ exchange).

Framing turns a message into a list of buffers for one ``sendmsg``: tag +
header (packed after the seq is assigned, so its CRC covers the seq), the
front/middle/data buffers as they are (no copy), and the footer. With the C
fast path and the current (NOSRCADDR) header, ``Framer.frame_all`` copies the
payloads of a run of small messages into one buffer (one join) and one
``msgr_frame_batch`` call (csrc/frame_out.c) writes every tag, header, CRC and
footer around them; a big message gets one ``msgr_frame_msg`` call, its
tag+header and footer in an arena bytearray (``reserve``), its segments sent as
they are. The pure path gives identical bytes (tests/test_frame_out.py). The CRC of a big
``bytes`` segment may already be known: ``precompute_crcs`` computed it in the application thread
that called send_message (tests/test_large_send.py).
"""
from __future__ import annotations

import struct
from array import array as _array
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from msgr import _cext, _cwire
from msgr._typing import BytesLike
from msgr.crc import BACKEND as crc_backend
from msgr.crc import crc32c
from msgr.features import MSG_AUTH, NOSRCADDR
from msgr.message import Message
from msgr.wire import FOOTER_COMPLETE, FOOTER_NOCRC, FOOTER_SIGNED, Priority, pack_ack

# read per session: a module constant, not an Enum class attribute (the hook in states.States)
_HIGHEST = Priority.HIGHEST

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.host import MessageSigner

_TAG_MSG = b"\x07"
_pack_tag_hdr = struct.Struct("<BQQHHHIIIHBQHH").pack     # tag + the 49 header bytes the crc covers
_pack_u32 = struct.Struct("<I").pack
_FTR_TAIL = struct.Struct("<IIIQB").pack
_FTR_OLD = struct.Struct("<IIIB").pack


def _pack_ftr(fc: int, mc: int, dc: int, flags: int) -> bytes:
    return _FTR_TAIL(fc, mc, dc, 0, flags)


_pack_ftr_old = _FTR_OLD
_c_frame: Callable[..., int] | None = None
_c_batch: Callable[..., int] | None = None
_c_one: Callable[..., int] | None = None
# msgr._hotcall (csrc/hotcall.c): a run / a lone message framed straight from the Message objects
_hot_burst: Callable[..., tuple[int, bytearray | None, BaseException | None]] | None = None
_hot_one: Callable[..., Any] | None = None
if crc_backend.startswith("c-"):
    from msgr._fastpath import ffi as _ffi
    from msgr._fastpath import lib as _lib

    _crc_at = _lib.msgr_crc32c_at
    _c_frame = _lib.msgr_frame_msg
    _from_buffer = _ffi.from_buffer
    _c_batch = _lib.msgr_frame_batch   # csrc/frame_out.c (a module without it is not used: msgr/_cext.py)
    _c_one = _lib.msgr_frame_one

    def _crc_tag_hdr(head: bytes) -> int:
        return _crc_at(0, head, 50, 1, 49)

    _hot = _cext.hotcall()
    if _hot is not None:
        _hot_burst, _hot_one = _hot.frame_burst, _hot.frame_one
else:
    def _crc_tag_hdr(head: bytes) -> int:
        return crc32c(0, head[1:])
_ZERO_CRC = b"\0\0\0\0"
_SLOT = 1 + 53 + 21          # arena bytes per message: tag + header + (largest) footer
# batch framing (csrc/frame_out.c): payloads up to this many bytes are copied into the turn's one
# buffer (a copy is cheaper than a buffer of their own from here on); bigger ones go out as they are
INLINE_MAX = 8192
RUN_MAX_BYTES = 64 * 1024   # one buffer per this much: what is written is freed while the rest waits
# (front, middle, data) types a run copies: bytes and bytearray (a view may not be contiguous);
# one set lookup of the three instead of three
_JOINABLE3 = frozenset((a, b, c) for a in (bytes, bytearray) for b in (bytes, bytearray)
                       for c in (bytes, bytearray))
_HOLE_HEAD = bytes(1 + 53)
_HOLE_FOOT, _HOLE_FOOT_OLD = bytes(21), bytes(13)
_F_CRC_HEADER, _F_CRC_DATA, _F_NEW_FOOTER = 1, 2, 4   # msgr_frame_msg flags (fastpath.h)
#: the arena a lone small message (a reply) is framed into by msgr_frame_one: a new one when the
#: rest is too small (what was handed out keeps its part alive until written)
ONE_ARENA = 4096
_ONE_ROOM = _SLOT + 9               # arena bytes of msgr_frame_one around the body: framing and the ACK
_ONE_MAX = INLINE_MAX + _ONE_ROOM   # what frame_one frames by msgr_frame_one: a body up to INLINE_MAX


def _cbuf(seg: BytesLike) -> Any:
    """A segment as a ``const char *`` argument: bytes as-is, other buffers through from_buffer."""
    if type(seg) is bytes:
        return seg
    try:
        return _from_buffer(seg)
    except BufferError:           # a non-contiguous view: one copy
        return memoryview(seg).tobytes()


class OutQueue:
    """Per-priority FIFOs + the sent list + ``out_seq`` of one session."""

    __slots__ = ("_queues", "_prios", "sent", "out_seq", "count")

    def __init__(self) -> None:
        self._queues: dict[int, deque[Message]] = {}
        self._prios: list[int] = []   # ascending; the writer walks it from the end
        self.sent: deque[Message] = deque()
        self.out_seq = 0
        self.count = 0   # messages queued (len(); a plain attribute for the writer's per-write test)

    def __len__(self) -> int:
        return self.count

    def queue_for(self, prio: int) -> deque[Message]:
        """The FIFO of ``prio`` (made on first use); whoever appends to it adds to ``count``."""
        q = self._queues.get(prio)
        if q is None:
            q = self._queues[prio] = deque()
            insort(self._prios, prio)
        return q

    def enqueue(self, msg: Message) -> None:
        q = self._queues.get(msg.header.priority)   # _queue's lookup inline: once per message sent
        if q is None:
            q = self.queue_for(msg.header.priority)
        q.append(msg)
        self.count += 1

    def pop(self) -> Message | None:
        """The head of the highest non-empty priority queue, or None."""
        if not self.count:
            return None
        prios = self._prios
        if len(prios) == 1:   # the usual session: one priority in use
            self.count -= 1
            return self._queues[prios[0]].popleft()
        for prio in reversed(prios):
            q = self._queues[prio]
            if q:
                self.count -= 1
                return q.popleft()
        return None  # pragma: no cover - count says otherwise

    def take_all(self) -> list[Message]:
        """Remove and return everything queued, in write order (highest priority first)."""
        if not self.count:
            return []
        prios = self._prios
        if len(prios) == 1:
            q = self._queues[prios[0]]
            msgs = list(q)
            q.clear()
        else:
            msgs = [m for p in reversed(prios) for m in self._queues[p]]
            for q in self._queues.values():
                q.clear()
        self.count = 0
        return msgs

    def put_back(self, msgs: list[Message]) -> None:
        """Undo ``take_all`` for ``msgs`` (never written): back to the front of their queues."""
        for m in reversed(msgs):
            self.queue_for(m.header.priority).appendleft(m)
        self.count += len(msgs)

    def queued(self) -> list[Message]:
        """Everything queued, in the order it would be written."""
        return [m for p in reversed(self._prios) for m in self._queues[p]]

    # --- lossless bookkeeping ---------------------------------------------
    def mark_sent(self, msg: Message) -> None:
        self.sent.append(msg)

    def ack(self, seq: int) -> int:
        """Drop sent messages with seq <= ``seq`` (a cumulative ACK); returns how many."""
        sent = self.sent
        if not sent:
            return 0
        n = len(sent)
        if sent[-1].header.seq <= seq:     # all of them (seqs ascend)
            sent.clear()
            return n
        # the sent list holds consecutive seqs, so the count is a subtraction; checked, and the walk
        # below does it otherwise
        k = seq - sent[0].header.seq + 1
        if 0 < k < n and sent[k - 1].header.seq == seq and sent[k].header.seq > seq:
            popleft = sent.popleft
            for _ in range(k):
                popleft()
            return k
        n = 0
        while sent and sent[0].header.seq <= seq:
            sent.popleft()
            n += 1
        return n

    def requeue_sent(self) -> int:
        """Put the sent list back at the front of HIGHEST, rewinding out_seq (same seqs again)."""
        n = len(self.sent)
        if n:
            self.queue_for(_HIGHEST).extendleft(reversed(self.sent))
            self.count += n
            self.out_seq -= n
            self.sent.clear()
        return n

    def discard_requeued_up_to(self, seq: int) -> list[Message]:
        """Drop requeued messages the peer already has (seq <= ``seq``); returns them."""
        q = self._queues.get(_HIGHEST)
        if not q:
            # nothing requeued: our next seq follows what the peer already has
            self.out_seq = max(self.out_seq, seq)
            return []
        dropped: list[Message] = []
        while q:
            s = q[0].header.seq
            if s == 0 or s > seq:
                break
            dropped.append(q.popleft())
            self.count -= 1
            self.out_seq += 1
        return dropped

    def settled(self, seq: int) -> bool:
        """True once no message with a seq up to ``seq`` waits to be (re)sent or acked.

        Sent messages are in seq order and requeued ones sit, in seq order, at the front of HIGHEST
        (fresh ones have seq 0 until written), so two heads answer it.
        """
        sent = self.sent
        if sent and sent[0].header.seq <= seq:
            return False
        q = self._queues.get(_HIGHEST)
        if q:
            s = q[0].header.seq
            if s and s <= seq:
                return False
        return True

    def clear(self) -> list[Message]:
        """Drop every queued and sent message (session reset); returns them, sent first."""
        dropped = list(self.sent) + self.queued()
        self.sent.clear()
        for q in self._queues.values():
            q.clear()
        self.count = 0
        return dropped


#: A bytes segment at least this long gets its CRC-32C in the sending thread (precompute_crcs, called
#: by AsyncConnection.send_message off the worker), as Ceph's send_message prepares a message in the
#: caller: the C CRC runs without the GIL, so a worker that also receives does not pay it.
PRECOMPUTE_MIN = 64 * 1024
_NOT_KNOWN = (None, None, None)


def precompute_crcs(msg: Message) -> None:
    """Compute now the CRCs of ``msg``'s big ``bytes`` segments and keep them on the message with the
    segment they belong to; :meth:`Framer.frame` uses one only while that very object is still the
    segment (a payload re-encoded for other features is computed again). Immutable segments only:
    a bytearray could change before it is framed."""
    front, middle, data = msg.front, msg.middle, msg.data
    if max(len(front), len(middle), len(data)) < PRECOMPUTE_MIN:
        return
    known = tuple((seg, crc32c(0, seg)) if type(seg) is bytes and len(seg) >= PRECOMPUTE_MIN else None
                  for seg in (front, middle, data))
    if known != _NOT_KNOWN:
        msg.__dict__["_seg_crcs"] = known


def _crc_of(seg: BytesLike, known: tuple[BytesLike, int] | None) -> int:
    """The CRC-32C of a segment: precomputed for this very object, else now (0 for an empty one)."""
    if known is not None and known[0] is seg:
        return known[1]
    return crc32c(0, seg) if seg else 0


class Framer:
    """Builds the wire buffers of messages for one session's negotiated features."""

    __slots__ = ("new_header", "new_footer", "crc_header", "crc_data", "src_type", "src_num",
                 "features", "old_src_addr", "signer", "_src_num_u", "_cflags", "_batch", "_arena", "_apos",
                 "_aend", "_amv", "last_run", "_optr", "_omv", "_opos", "_oend", "_hot")

    def __init__(self, features: int, crc_header: bool, crc_data: bool, src_type: int, src_num: int,
                 old_src_addr: bytes = b"", signer: MessageSigner | None = None) -> None:
        self.features = features
        self.signer = signer          # cephx: footers are signed (the generic path below does it)
        self.new_header = features & NOSRCADDR == NOSRCADDR
        self.new_footer = features & MSG_AUTH == MSG_AUTH
        self.crc_header = crc_header
        self.crc_data = crc_data
        self.src_type = src_type
        self.src_num = src_num
        self.old_src_addr = old_src_addr  # legacy 136 bytes; Ceph's old header carried the peer's address
        self._src_num_u = src_num + (1 << 64) if src_num < 0 else src_num   # the header's u64 bit pattern
        # the C framer handles the current header in every CRC mode; None = the Python paths
        self._cflags = None if _c_frame is None or not self.new_header or signer is not None else (
            (_F_CRC_HEADER if crc_header else 0) | (_F_CRC_DATA if crc_data else 0)
            | (_F_NEW_FOOTER if self.new_footer else 0))
        # frame_all's one-call paths (msgr_frame_batch and msgr_frame_one: one module has both)
        self._batch = self._cflags is not None and _c_batch is not None
        # what msgr._hotcall's framers take (csrc/hotcall.c); None: the cffi paths below
        self._hot: tuple[int, ...] | None = (
            (features, src_type, src_num, self._src_num_u, self._cflags, INLINE_MAX, RUN_MAX_BYTES)
            if self._batch and _hot_burst is not None and self._cflags is not None else None)
        self._arena = None            # cffi pointer into the arena bytearray (kept alive by _amv)
        self._amv: memoryview | None = None
        self._apos = self._aend = 0
        # the buffer the last C run was framed into (ours alone: frame_all may append the ACK to it)
        self.last_run: bytearray | None = None
        # the arena of msgr_frame_one (a lone small message): cffi pointer, memoryview, next free byte, size
        self._optr: Any = None
        self._omv: memoryview | None = None
        self._opos = self._oend = 0

    def frame_all(self, msgs: list[Message], seq: int, out: list[BytesLike],
                  ack: int = 0) -> tuple[int, BaseException | None]:
        """Frame ``msgs`` in order with seqs ``seq + 1``, ``seq + 2``, ... onto ``out``, then (``ack``
        not 0) a cumulative ACK of seq ``ack``.

        Returns ``(framed, error)``: every message (and the ACK) when ``error`` is None; otherwise
        the first ``framed`` are on ``out`` and ``msgs[framed]`` could not be framed (a payload that
        does not encode, a header field out of range: ``error``), its seq untouched, nothing after
        it framed, no ACK. With the C batch framer small messages of a run are framed by one C call
        into one buffer (:meth:`_frame_run`), a lone one (a reply) with its ACK by one C call into
        the arena (:meth:`_frame_one`); the bytes are those of :meth:`frame`, message by message,
        and ``wire.pack_ack``.
        """
        if self._batch and len(msgs) == 1:
            return self.frame_one(msgs[0], seq, out, ack)
        if self._hot is not None:
            n, err = self._frame_hot(msgs, seq, out)
        else:
            n, err = self._frame_many(msgs, seq, out) if self._batch else self._frame_each(msgs, seq, out)
        if ack and err is None:
            self._append_ack(out, ack)
        return n, err

    def frame_one(self, msg: Message, seq: int, out: list[BytesLike], ack: int = 0) -> tuple[int, BaseException | None]:
        """:meth:`frame_all` of ``[msg]``: a small one whose segments are ``bytes`` (a round trip's
        reply) and the ACK by one ``msgr_frame_one`` call into the arena, else the general way.
        With msgr._hotcall: one call reads the message and returns it framed, with the ACK, as bytes."""
        hot = self._hot
        if hot is not None:
            assert _hot_one is not None
            r = _hot_one(hot, msg, seq, ack)
            if type(r) is bytes:
                out.append(r)
                return 1, None
            if r is not None:   # what its encode_payload raised
                return 0, r
            n, err = self._frame_hot([msg], seq, out)   # not one frame_one takes: the general way
        elif self._batch:
            try:
                msg._encode(self.features)
            except BaseException as exc:
                return 0, exc
            front, middle, data = msg.front, msg.middle, msg.data
            h = msg.header
            fl, ml, dl = h.front_len, h.middle_len, h.data_len
            need = fl + ml + dl + _ONE_ROOM
            if need <= _ONE_MAX and type(front) is bytes and type(middle) is bytes and type(data) is bytes:
                pos = self._opos
                if self._oend - pos < need:
                    buf = bytearray(max(ONE_ARENA, need))
                    self._optr, self._omv, pos, self._oend = _from_buffer(buf), memoryview(buf), 0, len(buf)
                assert _c_one is not None and self._omv is not None   # _batch is set only with the C module
                try:
                    n = _c_one(self._optr, self._oend, pos, seq + 1, h.tid, h.type, h.priority, h.version,
                               h.data_off, h.compat_version, h.reserved, self.src_type, self._src_num_u,
                               front, fl, middle, ml, data, dl, ack, self._cflags)
                except OverflowError:
                    n = -2   # a field out of range: the general way below names it
                if n > 0:
                    h.src_type, h.src_num = self.src_type, self.src_num
                    h.seq = seq + 1
                    n += pos
                    self._opos = n
                    out.append(self._omv[pos:n])
                    return 1, None
            n, err = self._frame_many([msg], seq, out)
        else:
            n, err = self._frame_each([msg], seq, out)
        if ack and err is None:
            self._append_ack(out, ack)
        return n, err

    def _append_ack(self, out: list[BytesLike], ack: int) -> None:
        tail, self.last_run = self.last_run, None
        if tail is not None and out and out[-1] is tail:
            # the messages' own run buffer takes the ACK too: one buffer, one plain send
            try:
                tail += pack_ack(ack)
                return
            except BufferError:   # still exported (never expected): a buffer of its own
                pass
        out.append(pack_ack(ack))

    def _frame_hot(self, msgs: list[Message], seq: int, out: list[BytesLike]) -> tuple[int, BaseException | None]:
        """:meth:`frame_all` with msgr._hotcall, without the ACK: each call frames a run of small
        messages into one buffer (csrc/hotcall.c frame_burst, the rules of :meth:`_frame_many`);
        a message it leaves (big, a view, a field out of range, not a plain Message) goes the
        general way (:meth:`_frame_each`)."""
        self.last_run = None
        hot = self._hot
        assert _hot_burst is not None and hot is not None
        done, total = 0, len(msgs)
        while done < total:
            n, buf, err = _hot_burst(hot, msgs, done, seq + done, out)
            if n:
                done += n
                self.last_run = buf
            if err is not None:
                return done, err
            if not n:
                n, err = self._frame_each(msgs[done:done + 1], seq + done, out)
                done += n
                if err is not None:
                    return done, err
        return done, None

    def _frame_many(self, msgs: list[Message], seq: int, out: list[BytesLike]) -> tuple[int, BaseException | None]:
        """:meth:`frame_all` with the C batch framer, without the ACK."""
        self.last_run = None
        features, st, sn = self.features, self.src_type, self.src_num
        hole_foot = _HOLE_FOOT if self.new_footer else _HOLE_FOOT_OLD
        parts: list[BytesLike] = []
        fields: list[int] = []
        run: list[Message] = []
        run_bytes = 0
        done = 0                       # framed before the current run
        nxt = seq                      # the seq of the run's last message (seq + done + len(run))
        for msg in msgs:
            try:
                msg._encode(features)
            except BaseException as exc:
                n, err = self._frame_run(run, parts, fields, seq + done, out)
                return done + n, err or exc
            front, middle, data = msg.front, msg.middle, msg.data
            h = msg.header
            fl, ml, dl = h.front_len, h.middle_len, h.data_len
            body = fl + ml + dl
            if body > INLINE_MAX or not (type(front) is bytes and type(middle) is bytes and type(data) is bytes
                                         or (type(front), type(middle), type(data)) in _JOINABLE3):
                # big (or a view, which may not be contiguous): its own buffers, after the run
                n, err = self._frame_run(run, parts, fields, seq + done, out)
                done += n
                if err is None:
                    n, err = self._frame_each([msg], seq + done, out)
                    done += n
                if err is not None:
                    return done, err
                run, parts, fields, run_bytes, nxt = [], [], [], 0, seq + done
                continue
            h.src_type, h.src_num = st, sn
            run.append(msg)
            nxt += 1
            parts += (_HOLE_HEAD, front, middle, data, hole_foot)
            fields += (nxt, h.tid, h.type, h.priority, h.version, h.data_off, h.compat_version, h.reserved,
                       fl, ml, dl)
            run_bytes += body + _SLOT   # the buffer holds the framing too
            if run_bytes > RUN_MAX_BYTES:
                n, err = self._frame_run(run, parts, fields, seq + done, out)
                done += n
                if err is not None:
                    return done, err
                run, parts, fields, run_bytes = [], [], [], 0
        n, err = self._frame_run(run, parts, fields, seq + done, out)
        return done + n, err

    def _frame_run(self, run: list[Message], parts: list[BytesLike], fields: list[int], seq: int,
                   out: list[BytesLike]) -> tuple[int, BaseException | None]:
        """One C call frames ``run`` (payloads in ``parts``, MSGR_FRAME_FIELDS a message in ``fields``,
        seqs from ``seq + 1``) into one buffer; on a field out of range the run goes message by
        message, which stops at the exact message with the exact error."""
        n = len(run)
        if not n:
            return 0, None
        try:
            arr = _array("Q", fields)
        except OverflowError:
            return self._frame_each(run, seq, out)
        buf = bytearray().join(parts)
        assert _c_batch is not None and self._cflags is not None   # _batch is set only with both
        if _c_batch(_from_buffer(buf), len(buf), _from_buffer("uint64_t[]", arr), n, self.src_type,
                    self._src_num_u, self._cflags) != n:
            return self._frame_each(run, seq, out)
        for s, m in enumerate(run, seq + 1):
            m.header.seq = s
        out.append(buf)
        self.last_run = buf
        return n, None

    def _frame_each(self, msgs: list[Message], seq: int, out: list[BytesLike]) -> tuple[int, BaseException | None]:
        """:meth:`frame_all` message by message (:meth:`frame`)."""
        self.reserve(len(msgs))
        frame = self.frame
        i = 0
        try:
            for msg in msgs:
                h = msg.header
                prev, h.seq = h.seq, seq + 1
                try:
                    frame(msg, out)
                except BaseException as exc:
                    h.seq = prev
                    return i, exc
                seq += 1
                i += 1
        finally:
            self.release()
        return i, None

    def reserve(self, n: int) -> None:
        """Room for the tag+header and footer of ``n`` messages framed next (one allocation)."""
        if self._cflags is not None and self._aend - self._apos < n * _SLOT:
            buf = bytearray(n * _SLOT)
            self._arena, self._amv, self._apos, self._aend = _from_buffer(buf), memoryview(buf), 0, len(buf)

    def release(self) -> None:
        """Drop the arena: the buffers already handed out keep their part alive until written."""
        self._arena = self._amv = None
        self._apos = self._aend = 0

    def frame(self, msg: Message, out: list[BytesLike]) -> int:
        """Append tag+header, front, middle, data, footer of ``msg`` (seq already set); returns bytes."""
        msg._encode(self.features)
        h = msg.header
        h.src_type, h.src_num = self.src_type, self.src_num
        front, middle, data = msg.front, msg.middle, msg.data
        cflags = self._cflags
        known = msg.__dict__.get("_seg_crcs") if len(front) + len(middle) + len(data) >= PRECOMPUTE_MIN \
            else None
        common = self.new_header and self.crc_header and self.signer is None
        if cflags is not None and not (known is not None and common):
            pos = self._apos
            if self._aend - pos < _SLOT:
                self.reserve(1)
                pos = 0
            mv = self._amv
            assert _c_frame is not None and mv is not None   # _cflags is set only with the C framer
            try:
                n = _c_frame(self._arena, pos, h.seq, h.tid, h.type, h.priority, h.version, h.data_off,
                             self.src_type, self._src_num_u, h.compat_version, h.reserved,
                             front if type(front) is bytes else _cbuf(front), len(front),
                             middle if type(middle) is bytes else _cbuf(middle), len(middle),
                             data if type(data) is bytes else _cbuf(data), len(data), cflags)
            except OverflowError as exc:
                raise OverflowError(f"header field out of range: {exc}") from None
            end = pos + n
            self._apos = end
            out.append(mv[pos:pos + 54])
            if front:
                out.append(front)
            if middle:
                out.append(middle)
            if data:
                out.append(data)
            out.append(mv[pos + 54:end])
            return n + len(front) + len(middle) + len(data)
        if common:
            # the common case in one struct call + one in-place CRC (no wrapper, no extra concat); with the C
            # framer present only for a message whose big segments' CRCs were computed at send_message
            kf, km, kd = known or _NOT_KNOWN
            try:
                head = _pack_tag_hdr(7, h.seq, h.tid, h.type, h.priority, h.version, h.front_len,
                                     h.middle_len, h.data_len, h.data_off, self.src_type, self._src_num_u,
                                     h.compat_version, h.reserved)
            except struct.error as exc:
                raise OverflowError(f"header field out of range: {exc}") from None
            if self.crc_data:
                dc, flags = _crc_of(data, kd), FOOTER_COMPLETE
            else:
                dc, flags = 0, FOOTER_COMPLETE | FOOTER_NOCRC
            ftr = (_pack_ftr if self.new_footer else _pack_ftr_old)(_crc_of(front, kf), _crc_of(middle, km), dc, flags)
            out.append(head + _pack_u32(_crc_tag_hdr(head)))   # nothing appended before this point
            if front:
                out.append(front)
            if middle:
                out.append(middle)
            if data:
                out.append(data)
            out.append(ftr)
            return 54 + len(front) + len(middle) + len(data) + (21 if self.new_footer else 13)
        if self.new_header:
            hdr = _cwire.pack_header(h.seq, h.tid, h.type, h.priority, h.version, h.front_len,
                                     h.middle_len, h.data_len, h.data_off, self.src_type, self.src_num,
                                     h.compat_version, h.reserved)
        else:
            hdr = _cwire.pack_header_old(h.seq, h.tid, h.type, h.priority, h.version, h.front_len,
                                         h.middle_len, h.data_len, h.data_off, self.src_type, self.src_num,
                                         self.old_src_addr, self.src_type, self.src_num, self.old_src_addr,
                                         h.reserved & 0xFFFFFFFF)
        if not self.crc_header:
            # the sender leaves CRCs it does not compute at 0 (a checking receiver will refuse it)
            hdr = hdr[:-4] + _ZERO_CRC
        out.append(_TAG_MSG + hdr)
        if front:
            out.append(front)
        if middle:
            out.append(middle)
        if data:
            out.append(data)
        if self.crc_header:
            fc = crc32c(0, front) if front else 0
            mc = crc32c(0, middle) if middle else 0
        else:
            fc = mc = 0
        if self.crc_data:
            dc, flags = (crc32c(0, data) if data else 0), FOOTER_COMPLETE
        else:
            dc, flags = 0, FOOTER_COMPLETE | FOOTER_NOCRC
        sig = 0
        if self.signer is not None and self.new_footer:
            sig = self.signer.sign(int.from_bytes(hdr[-4:], "little"), fc, len(front), mc, len(middle), dc,
                                   len(data), h.seq)
            flags |= FOOTER_SIGNED
        out.append(_cwire.pack_footer(fc, mc, dc, sig, flags, self.new_footer))
        return 1 + len(hdr) + len(front) + len(middle) + len(data) + (21 if self.new_footer else 13)


class FlushMarks:
    """Sans-IO bookkeeping of the flush requests of one session (``Connection.flush``).

    A flush covers the messages queued when it was registered. While some of them wait unwritten
    in the queue, its mark is open; the first time the owner finds the queue empty (``take_output``
    takes everything at once) the mark becomes a target: on a lossless session the highest seq
    written so far, complete once :meth:`OutQueue.settled` (acked, or known to the peer after a
    reconnect); on a lossy one the count of bytes taken for writing, complete once the owner has
    written that many. Messages written in the same batch as the covered ones are waited for too
    (they leave together). A discard (session closed or reset) fails every mark: the owner calls
    :meth:`fail_all`. Tokens are the owner's (e.g. futures); the marks never look inside them.
    """

    __slots__ = ("_marks",)

    def __init__(self) -> None:
        self._marks: list[list[Any]] = []   # [token, target or None]

    def __bool__(self) -> bool:
        return bool(self._marks)

    def __len__(self) -> int:
        return len(self._marks)

    def add(self, token: object) -> None:
        """A flush of what is queued now (its target is fixed once the queue is drained)."""
        self._marks.append([token, None])

    def remove(self, token: object) -> None:
        """Withdraw a flush (its waiter gave up)."""
        self._marks = [m for m in self._marks if m[0] is not token]

    def progress(self, q: OutQueue, lossy: bool, taken_bytes: int, unwritten_bytes: int) -> list[Any]:
        """The tokens whose flush is complete now (removed); ``taken_bytes`` counts every byte taken
        for writing on this session so far, ``unwritten_bytes`` those of them not written yet."""
        done: list[Any] = []
        keep: list[list[Any]] = []
        drained = not len(q)
        for mark in self._marks:
            if mark[1] is None and drained:
                mark[1] = taken_bytes if lossy else q.out_seq
            target = mark[1]
            if target is not None and (taken_bytes - unwritten_bytes >= target if lossy else q.settled(target)):
                done.append(mark[0])
            else:
                keep.append(mark)
        self._marks = keep
        return done

    def fail_all(self) -> list[Any]:
        """Every token (removed): the messages they wait for were discarded."""
        tokens = [m[0] for m in self._marks]
        self._marks = []
        return tokens


def iter_seqs(msgs: Iterable[Message]) -> list[int]:
    """The header seqs of ``msgs`` (a debugging/test helper)."""
    return [m.header.seq for m in msgs]
