"""ProtocolV1: the sans-IO msgr v1 state machine (bytes and time in, actions out).

    connect side                                    accept side
    NONE/STANDBY/WAIT --start_connect/backoff-->    NONE --start_accept-->
    CONNECTING --on_connected--> CONNECTING_RE      ACCEPTING -> ACCEPTING_WAIT_BANNER_ADDR (145)
      -> CONNECTING_WAIT_BANNER_AND_IDENTIFY (281)    -> ACCEPTING_WAIT_CONNECT_MSG (33)  <------+
      -> CONNECTING_SEND_CONNECT_MSG  <----------+    -> ACCEPTING_WAIT_CONNECT_MSG_AUTH (len)   |
      -> CONNECTING_WAIT_CONNECT_REPLY (26)      |         decision table (handshake.py) --------+
      -> CONNECTING_WAIT_CONNECT_REPLY_AUTH (len)|         | SEQ: ACCEPTING_WAIT_SEQ (8)
           RETRY_*/RESETSESSION -----------------+         v
           SEQ: CONNECTING_WAIT_ACK_SEQ (8)             ACCEPTING_READY
           WAIT: WAIT (fault, reconnect after max backoff)   |
      -> CONNECTING_READY ------------------> OPEN (1: tag) <-+
        OPEN -> OPEN_TAG_ACK (8) | OPEN_KEEPALIVE2 (8) | OPEN_KEEPALIVE2_ACK (8) -> OPEN
        OPEN -> OPEN_MESSAGE_HEADER (53|334) -> THROTTLE_MESSAGE -> THROTTLE_BYTES
             -> THROTTLE_DISPATCH_QUEUE -> READ_FRONT -> READ_MIDDLE -> READ_DATA_PREPARE
             -> READ_DATA -> READ_FOOTER_AND_DISPATCH (21|13) -> OPEN
        Batch fast path: OPEN -> (complete frames in buffer) -> dispatch -> OPEN: one C scan
        (``_cwire.scan_pinned``) hands over every complete small frame (53-byte header, body
        <= BATCH_MAX_INLINE) with the same checks; a partial small frame waits in OPEN. The
        states above remain the path for large bodies (direct reads), a full throttle, CLOSE,
        the old 334-byte header and bad input (their readers raise the typed errors).
    Any state -> fault(): STANDBY | CONNECTING (reconnect) | CLOSED; a lossless replace moves an
    existing session to ACCEPTING_WAIT_CONNECT_MSG (adopt_socket).

``TRANSITIONS`` below is the whole machine: per state, how many bytes its
reader needs, which reader runs, and where it may go next. ``_to()`` refuses
any other move. Readers live in ``handshake.py`` (both roles) and
``open_state.py``; faults, resets and reconnects in ``session.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from msgr._typing import BytesLike
from msgr.entity import EntityAddr, EntityName
from msgr.errors import DecodeError, LocalProtocolError, MsgrError
from msgr.policy import Policy
from msgr.protocol.actions import Action, TimerKind
from msgr.protocol.base import BLOCKED
from msgr.protocol.handshake import HandshakeMixin
from msgr.protocol.host import ProtocolHost
from msgr.protocol.open_state import OpenMixin
from msgr.protocol.outq import Framer, OutQueue
from msgr.protocol.session import SessionMixin
from msgr.protocol.states import OPEN_STATES, State
from msgr.segment_crc import SegmentCrc

S = State
# per-read state tests use module constants: on Python 3.11 an Enum class attribute costs a
# metaclass __getattr__ hook (~800 instructions) per read
_OPEN, _CLOSED, _NONE = S.OPEN, S.CLOSED, S.NONE

#: Receive buffer (small frames, handshake): RBUF_IDLE while a connection is quiet, RBUF_SIZE
#: while it streams. It grows when a read fills all the room offered (the socket had more), and
#: shrinks back when a read leaves it empty RBUF_QUIET_US after the last filling read (or on
#: ``trim_idle``): 1,000 idle sessions hold 4 KiB each instead of 64 KiB.
RBUF_SIZE = 64 * 1024
RBUF_IDLE = 4 * 1024
RBUF_QUIET_US = 200_000
#: A front/middle/data segment larger than this that is not yet in the receive buffer is read
#: straight into its own buffer (``get_buffer`` returns a view of it).
DIRECT_MIN = 8 * 1024
#: Direct segments up to this are allocated whole when their header arrives (one recv_into
#: target, no join). A larger one grows as its bytes arrive: chunks of DIRECT_CHUNK bytes at
#: first, then as large as what has arrived (geometric), joined once at the end; so a header
#: claiming ms_max_message_data_len makes the receiver allocate a bounded amount, not that.
DIRECT_PREALLOC_MAX = 4 << 20
DIRECT_CHUNK = 1 << 20


def _unfilled_bytearray() -> Callable[[int], bytearray]:
    """``bytearray(n)`` without its zero fill, for direct segment buffers: the socket writes such a
    buffer whole before anything reads it (it is handed on only once ``_direct_pos`` reaches its
    end, else dropped), so clearing it first is one more pass over the data (30-45 us for 4 MiB).
    Plain ``bytearray`` where the C API is not reachable through ctypes."""
    try:
        import ctypes
        proto = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)
        make = proto(("PyByteArray_FromStringAndSize", ctypes.pythonapi))
    except (ImportError, AttributeError, OSError):
        return bytearray

    def unfilled(n: int) -> bytearray:
        buf: bytearray = make(None, n)
        return buf
    return unfilled


_unfilled = _unfilled_bytearray()
_MIN_FREE = 4096
# a new session's counters (copied: a dict copy is cheaper than a dict built from keywords)
_STATS_ZERO = dict(msgs_in=0, msgs_out=0, bytes_in=0, bytes_out=0, keepalives=0, faults=0, reconnects=0,
                   throttle_waits=0)
#: Distinct notable fault causes one session remembers (each is reported at WARNING once).
MAX_WARNED_CAUSES = 32


class Row(NamedTuple):
    need: int | str          # bytes the reader consumes (an int, or the name of the attribute holding it)
    reader: str | None       # method run when ``need`` bytes are buffered; None = driven by calls/timers
    next: frozenset[State]   # states the reader (or call) may move to
    peek: str | None = None  # method(buf, off, avail) run on a partial arrival: raises when those
                             # bytes can never become valid (a non-Ceph peer is dropped at once)


def _r(need: int | str, reader: str | None, *nxt: State, peek: str | None = None) -> Row:
    return Row(need, reader, frozenset(nxt), peek)


#: Every state may also go to CLOSED, STANDBY or CONNECTING (fault paths, session.py) and, for a
#: lossless replace, to ACCEPTING_WAIT_CONNECT_MSG (adopt_socket).
ALWAYS = frozenset({S.CLOSED, S.STANDBY, S.CONNECTING, S.ACCEPTING_WAIT_CONNECT_MSG})

TRANSITIONS: dict[State, Row] = {
    S.NONE: _r(0, None, S.CONNECTING, S.ACCEPTING),
    # --- connect side (handshake.py) -------------------------------------------------------------
    S.CONNECTING: _r(0, None, S.CONNECTING_RE),                       # on_connected
    S.CONNECTING_RE: _r(0, None, S.CONNECTING_WAIT_BANNER_AND_IDENTIFY),
    S.CONNECTING_WAIT_BANNER_AND_IDENTIFY: _r(281, "_read_server_identify", S.CONNECTING_SEND_CONNECT_MSG,
                                              peek="_peek_identify"),
    S.CONNECTING_SEND_CONNECT_MSG: _r(0, None, S.CONNECTING_WAIT_CONNECT_REPLY),
    S.CONNECTING_WAIT_CONNECT_REPLY: _r(26, "_read_connect_reply", S.CONNECTING_WAIT_CONNECT_REPLY_AUTH,
                                        peek="_peek_connect_reply"),
    S.CONNECTING_WAIT_CONNECT_REPLY_AUTH: _r("_need_auth", "_read_connect_reply_auth",
                                             S.CONNECTING_SEND_CONNECT_MSG, S.CONNECTING_WAIT_ACK_SEQ,
                                             S.CONNECTING_READY, S.WAIT),
    S.CONNECTING_WAIT_ACK_SEQ: _r(8, "_read_ack_seq", S.CONNECTING_READY),
    S.CONNECTING_READY: _r(0, None, S.OPEN),
    # --- accept side (handshake.py) ---------------------------------------------------------------
    S.ACCEPTING: _r(0, None, S.ACCEPTING_WAIT_BANNER_ADDR),
    S.ACCEPTING_WAIT_BANNER_ADDR: _r(145, "_read_client_banner_addr", S.ACCEPTING_WAIT_CONNECT_MSG,
                                     peek="_peek_identify"),
    S.ACCEPTING_WAIT_CONNECT_MSG: _r(33, "_read_connect_msg", S.ACCEPTING_WAIT_CONNECT_MSG_AUTH),
    S.ACCEPTING_WAIT_CONNECT_MSG_AUTH: _r("_need_auth", "_read_connect_msg_auth",
                                          S.ACCEPTING_WAIT_CONNECT_MSG, S.ACCEPTING_WAIT_SEQ,
                                          S.ACCEPTING_READY),
    S.ACCEPTING_WAIT_SEQ: _r(8, "_read_wait_seq", S.ACCEPTING_READY),
    S.ACCEPTING_READY: _r(0, None, S.OPEN),
    # --- open (open_state.py) ---------------------------------------------------------------------
    S.OPEN: _r(1, "_read_tag", S.OPEN, S.OPEN_TAG_ACK, S.OPEN_KEEPALIVE2, S.OPEN_KEEPALIVE2_ACK,
               S.OPEN_MESSAGE_HEADER),
    S.OPEN_TAG_ACK: _r(8, "_read_ack", S.OPEN),
    S.OPEN_KEEPALIVE2: _r(8, "_read_keepalive2", S.OPEN),
    S.OPEN_KEEPALIVE2_ACK: _r(8, "_read_keepalive2_ack", S.OPEN),
    S.OPEN_MESSAGE_HEADER: _r("_header_size", "_read_message_header", S.OPEN_MESSAGE_THROTTLE_MESSAGE),
    S.OPEN_MESSAGE_THROTTLE_MESSAGE: _r(0, "_throttle_message", S.OPEN_MESSAGE_THROTTLE_BYTES),
    S.OPEN_MESSAGE_THROTTLE_BYTES: _r(0, "_throttle_bytes", S.OPEN_MESSAGE_THROTTLE_DISPATCH_QUEUE),
    S.OPEN_MESSAGE_THROTTLE_DISPATCH_QUEUE: _r(0, "_throttle_dispatch_queue", S.OPEN_MESSAGE_READ_FRONT),
    S.OPEN_MESSAGE_READ_FRONT: _r("_seg_len", "_read_segment", S.OPEN_MESSAGE_READ_MIDDLE),
    S.OPEN_MESSAGE_READ_MIDDLE: _r("_seg_len", "_read_segment", S.OPEN_MESSAGE_READ_DATA_PREPARE),
    S.OPEN_MESSAGE_READ_DATA_PREPARE: _r(0, "_read_data_prepare", S.OPEN_MESSAGE_READ_DATA),
    S.OPEN_MESSAGE_READ_DATA: _r("_seg_len", "_read_segment", S.OPEN_MESSAGE_READ_FOOTER_AND_DISPATCH),
    S.OPEN_MESSAGE_READ_FOOTER_AND_DISPATCH: _r("_footer_size", "_read_footer_and_dispatch", S.OPEN),
    # --- idle / end (session.py) ------------------------------------------------------------------
    S.STANDBY: _r(0, None),
    S.WAIT: _r(0, None),
    S.CLOSED: _r(0, None),
}

#: States whose reader takes a front/middle/data segment (may be read directly into its own buffer).
SEGMENT_STATES = frozenset({S.OPEN_MESSAGE_READ_FRONT, S.OPEN_MESSAGE_READ_MIDDLE, S.OPEN_MESSAGE_READ_DATA})

# The same table keyed by id(state): Enum.__hash__ is a Python-level function, and the read path
# looks states up several times per message (members are singletons, so their ids are stable).
_ROW_BY_ID = {id(s): row for s, row in TRANSITIONS.items()}
_NEXT_IDS = {id(s): frozenset(map(id, row.next | ALWAYS)) for s, row in TRANSITIONS.items()}
_SEGMENT_IDS = frozenset(map(id, SEGMENT_STATES))
_OPEN_IDS = frozenset(map(id, OPEN_STATES))   # has_output/take_output in the handshake states



class ProtocolV1(HandshakeMixin, OpenMixin, SessionMixin):
    """One msgr v1 session (see the module doc and ``TRANSITIONS``)."""

    # Every attribute a session sets, as a slot: ~70 attributes are more than an instance dict
    # shares keys for (30 on CPython 3.11), so each session built a private dict by resizing it
    # several times, and every attribute read on the per-read paths was a hashed dict lookup.
    # The mixins have no slots, so an instance dict stays for anything else (a test's stand-in);
    # tests/test_protocol_slots.py checks that a session through handshake, OPEN traffic and a
    # reconnect sets nothing outside these.
    __slots__ = (
        "_acked_seq", "_auth_challenged", "_auth_challenges", "_auth_server_challenge", "_auth_verdict",
        "_authorizer", "_authorizer_in", "_backoff_us", "_batch", "_connect", "_crc_data", "_crc_header",
        "_direct", "_direct_buf", "_direct_chunks", "_direct_crc", "_direct_got", "_direct_need", "_direct_pos",
        "_footer_size", "_framer", "_grow", "_has_socket", "_hdr", "_header_size", "_keepalive_pending",
        "_last_fill_us", "_need_auth", "_offered", "_once_ready", "_out", "_outq", "_peer_answered_wait",
        "_rbuf", "_ready_armed", "_ready_since_us", "_reconnect_armed", "_rend", "_replace_connect",
        "_replacing", "_reply", "_reply_auth", "_reset_from_peer", "_rmv", "_rpin", "_rpos", "_rsize",
        "_scan_flags", "_seg_sums", "_seg_len", "_segs", "_signer", "_sock_local", "_sock_peer", "_throttled",
        "_warned_causes", "_was_registered", "connect_seq", "connection", "features", "global_seq", "host", "in_seq",
        "last_decision", "last_keepalive_ack_stamp", "last_keepalive_ack_us", "last_keepalive_us",
        "peer_addr", "peer_global_seq", "peer_name", "peer_type", "policy", "state", "stats", "wants_read",
    )

    def __init__(self, host: ProtocolHost, connection: Any = None) -> None:
        self.host = host
        self.connection = connection
        self.state = _NONE
        self.peer_addr: EntityAddr | None = None
        self.peer_type: int | None = None
        self.peer_name: EntityName | None = None
        self.features = 0
        self.policy: Policy = Policy()
        self.connect_seq = 0
        self.peer_global_seq = 0
        self.global_seq = 0
        self.in_seq = 0
        self.wants_read = True
        self.last_keepalive_us = 0
        self.last_keepalive_ack_us = 0
        self.last_keepalive_ack_stamp: tuple[int, int] = (0, 0)
        self.stats = _STATS_ZERO.copy()
        self._warned_causes: set[str] = set()   # fault reasons already reported as notable
        cfg = host.config
        self._crc_header = cfg.ms_crc_header
        self._crc_data = cfg.ms_crc_data
        self._outq = OutQueue()
        self._out: list[BytesLike] = []   # control bytes (handshake, keepalives) waiting for take_output
        self._framer: Framer | None = None
        self._acked_seq = 0           # in_seq we last sent an ACK for
        self._keepalive_pending = False
        self._has_socket = False
        self._once_ready = False
        self._backoff_us = 0
        self._reconnect_armed = False
        # receive buffer: [_rpos, _rend) holds unread bytes; _direct is a segment's own buffer
        self._rbuf = _unfilled(RBUF_IDLE)   # no zero fill: only bytes a recv_into wrote are read
        self._rmv = memoryview(self._rbuf)
        self._rpin: Any = None        # _cwire.pin(_rbuf), made by the first batch scan of this buffer
        self._rsize = RBUF_IDLE
        self._rpos = self._rend = 0
        self._offered = 0             # length of the last get_buffer() view of _rbuf
        self._grow = False            # the last read filled _rbuf's room: stream into RBUF_SIZE
        self._last_fill_us = 0
        # a direct segment: _direct views _direct_buf, filled up to _direct_pos; a segment above
        # DIRECT_PREALLOC_MAX arrives in _direct_chunks (full chunks, _direct_got bytes) + _direct_buf
        self._direct: memoryview | None = None
        self._direct_buf: bytearray | None = None
        self._direct_pos = 0
        self._direct_need = 0
        self._direct_got = 0
        self._direct_chunks: list[bytearray] | None = None
        self._direct_crc: SegmentCrc | None = None   # the segment's CRC as it arrives (None: not checked)
        self._init_handshake()
        self._init_open()

    # --- read-only views ---------------------------------------------------------------------------
    @property
    def out_seq(self) -> int:
        return self._outq.out_seq

    @property
    def outq(self) -> OutQueue:
        """The send queue (read-only use: the owner's flush bookkeeping, FlushMarks)."""
        return self._outq

    def is_connected(self) -> bool:
        return self.state in OPEN_STATES

    def __repr__(self) -> str:
        return (f"ProtocolV1({self.host.my_name} -> {self.peer_addr} {self.state!r} cseq={self.connect_seq} "
                f"in={self.in_seq} out={self.out_seq})")

    # --- the transition table in action ----------------------------------------------------------
    def _to(self, new: State) -> None:
        if id(new) not in _NEXT_IDS[id(self.state)]:
            raise LocalProtocolError(f"no transition {self.state!r} -> {new!r}")
        self.state = new

    def _notable_fault(self, reason: str, error: Exception | None) -> bool:
        """Is this fault worth a WARNING? Bytes from the peer that cannot be valid (DecodeError:
        a bad banner or payload, a wrong node) are, the first time their cause faults this
        session; a lossless retry loop meeting the same cause again is not (no line per retry)."""
        if not isinstance(error, DecodeError) or reason in self._warned_causes:
            return False
        if len(self._warned_causes) >= MAX_WARNED_CAUSES:
            self._warned_causes.clear()   # bounded memory for a peer that varies its bad bytes
        self._warned_causes.add(reason)
        return True

    def _run(self, now_us: int, acts: list[Action], batch_stopped: bool = False) -> list[Action]:
        """Run readers while their bytes are buffered; bad input faults the connection (one place).
        ``batch_stopped``: the caller's ``_open_batch`` just stopped at ``_rpos`` (the state path
        takes that frame first)."""
        try:
            while self._direct is None:
                if self.state is _OPEN and self._batch:
                    if batch_stopped:
                        batch_stopped = False
                    elif self._open_batch(now_us, acts):
                        break   # OPEN -> (complete frames in buffer) -> dispatch; the rest waits for bytes
                row = _ROW_BY_ID[id(self.state)]
                if row.reader is None:
                    break
                need = row.need
                if isinstance(need, str):
                    need = getattr(self, need)
                pos = self._rpos
                avail = self._rend - pos
                if avail < need:
                    if row.peek is not None and avail:
                        getattr(self, row.peek)(self._rmv, pos, avail)   # raises on hopeless bytes
                    if id(self.state) in _SEGMENT_IDS and need > DIRECT_MIN:
                        self._start_direct(need, avail)
                    else:
                        self._make_room(need)
                    break
                self._rpos = pos + need
                if getattr(self, row.reader)(self._rmv, pos, need, now_us, acts) is BLOCKED:
                    break
        except MsgrError as exc:
            acts.extend(self._fault(f"{type(exc).__name__}: {exc}", now_us, exc))
        return self._settle(now_us, acts)

    def _settle(self, now_us: int, acts: list[Action]) -> list[Action]:
        """After a receive: grow, reset or shrink the receive buffer (see RBUF_*)."""
        if self._grow:
            self._grow = False
            if self._rsize < RBUF_SIZE:
                self._resize(RBUF_SIZE)
        if self._rpos == self._rend:
            self._rpos = self._rend = 0
            if self._rsize > RBUF_IDLE and now_us - self._last_fill_us >= RBUF_QUIET_US:
                self._resize(RBUF_IDLE)
        elif self._rsize - self._rend < _MIN_FREE:
            self._make_room(_MIN_FREE)
        return acts

    def _start_direct(self, need: int, avail: int) -> None:
        # need was checked against ms_max_message_*_len with the header; above
        # DIRECT_PREALLOC_MAX only a first chunk is allocated (the rest as bytes arrive)
        if need <= DIRECT_PREALLOC_MAX:
            buf, self._direct_chunks = _unfilled(need), None
        else:
            buf, self._direct_chunks = _unfilled(DIRECT_CHUNK), []
        mv = memoryview(buf)
        crc = self._direct_crc = self._segment_crc(need)
        if avail:
            buf[:avail] = self._rmv[self._rpos:self._rend]
            if crc is not None:
                crc.feed(mv[:avail])
        self._rpos = self._rend = 0
        self._direct_buf, self._direct, self._direct_pos = buf, mv, avail
        self._direct_need, self._direct_got = need, 0

    def _direct_filled(self) -> bytearray | None:
        """The current direct buffer is full: the whole segment, or None after adding a chunk."""
        buf = self._direct_buf
        assert buf is not None                 # a direct segment is being read
        chunks = self._direct_chunks
        if chunks is None:
            self._direct = self._direct_buf = None
            return buf
        chunks.append(buf)
        got = self._direct_got = self._direct_got + len(buf)
        left = self._direct_need - got
        if left:
            nxt = _unfilled(min(left, max(DIRECT_CHUNK, got)))   # geometric: as much as has arrived
            self._direct_buf, self._direct, self._direct_pos = nxt, memoryview(nxt), 0
            return None
        self._direct = self._direct_buf = self._direct_chunks = None
        return bytearray().join(chunks)   # the one copy of a segment above DIRECT_PREALLOC_MAX

    def _resize(self, size: int) -> None:
        """A new receive buffer of ``size`` bytes holding the unread bytes at its start."""
        pos, end = self._rpos, self._rend
        n = end - pos
        buf = bytearray(size)
        if n:
            buf[:n] = self._rmv[pos:end]
        self._rbuf, self._rmv, self._rsize = buf, memoryview(buf), size
        self._rpin = None
        self._rpos, self._rend = 0, n

    def _make_room(self, need: int) -> None:
        pos, end = self._rpos, self._rend
        size = self._rsize
        if need > size:
            self._resize(max(need, RBUF_SIZE))   # a small frame larger than the idle buffer
        elif pos == end:
            self._rpos = self._rend = 0
        elif size - pos < need or size - end < min(_MIN_FREE, size >> 2):
            n = end - pos
            self._rbuf[:n] = bytes(self._rmv[pos:end])
            self._rpos, self._rend = 0, n

    def _reset_recv(self) -> None:
        self._rpos = self._rend = 0
        if self._rsize > RBUF_IDLE:
            self._resize(RBUF_IDLE)      # a new socket starts quiet
        self._direct = self._direct_buf = self._direct_chunks = self._direct_crc = None
        self._direct_pos = self._direct_got = self._direct_need = 0

    def trim_idle(self, now_us: int) -> bool:
        """Give back the streaming receive buffer of a quiet session (an owner's idle tick may
        call it); True if it shrank. Never drops unread bytes."""
        if self._rsize > RBUF_IDLE and self._rpos == self._rend and now_us - self._last_fill_us >= RBUF_QUIET_US:
            self._resize(RBUF_IDLE)
            return True
        return False

    # --- input ------------------------------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        """Where the next ``recv_into`` should land (never empty)."""
        if self._direct is not None:
            return self._direct[self._direct_pos:]
        end = self._rend
        if not end:   # the usual read: an empty buffer, offered whole without a new view
            self._offered = self._rsize
            return self._rmv
        if end == self._rsize:
            self._make_room(_MIN_FREE)
            end = self._rend
            if end == self._rsize:             # all unread (a throttled session): more room
                self._resize(self._rsize * 2)
        self._offered = self._rsize - end
        return self._rmv[end:]

    def buffer_updated(self, nbytes: int, now_us: int) -> list[Action]:
        """``nbytes`` landed in the last ``get_buffer()``; 0 means EOF."""
        if self.state is _OPEN and self._batch and 0 < nbytes < self._offered and self._direct is None \
                and self._has_socket:
            # the usual read (small frames in OPEN, the room offered not filled): the batch path,
            # the general branch below without its tests
            self.stats["bytes_in"] += nbytes
            self._rend += nbytes
            acts: list[Action] = []
            try:
                if not self._open_batch(now_us, acts):
                    return self._run(now_us, acts, True)
            except MsgrError as exc:
                acts.extend(self._fault(f"{type(exc).__name__}: {exc}", now_us, exc))
            if self._rpos == self._rend and self._rsize == RBUF_IDLE:
                self._rpos = self._rend = 0   # all read into a quiet-size buffer: _settle's whole work
                return acts
            return self._settle(now_us, acts)
        if nbytes <= 0:
            return self.on_socket_error("connection closed by peer (EOF)", now_us)
        if self.state is _CLOSED or not self._has_socket:
            return []
        self.stats["bytes_in"] += nbytes
        acts = []
        direct = self._direct
        if direct is not None:
            pos = self._direct_pos
            end = self._direct_pos = pos + nbytes
            crc = self._direct_crc
            if crc is not None:
                crc.feed(direct[pos:end])      # to the CRC helper thread (msgr/segment_crc.py)
            if end < len(direct):
                return acts
            buf = self._direct_filled()
            if buf is None:
                return acts                    # a large segment: the next chunk is ready
            self._direct_crc = None
            try:
                self._segment_done(buf, now_us, acts, crc)
            except MsgrError as exc:
                return acts + self._fault(f"{type(exc).__name__}: {exc}", now_us, exc)
        else:
            self._rend += nbytes
            if nbytes >= self._offered:        # the socket may hold more: stream into a big buffer
                self._grow = True
                self._last_fill_us = now_us
        return self._run(now_us, acts)

    def receive_data(self, data: bytes, now_us: int) -> list[Action]:
        """Feed ``data`` through get_buffer/buffer_updated (tests, simulator); b"" = EOF."""
        if not data:
            return self.buffer_updated(0, now_us)
        acts: list[Action] = []
        mv, off = memoryview(data), 0
        while off < len(mv):
            if self.state is S.CLOSED or not self._has_socket or not self.wants_read:
                break  # the rest would never be read from a real socket either
            buf = self.get_buffer()
            n = min(len(buf), len(mv) - off)
            buf[:n] = mv[off:off + n]
            off += n
            acts.extend(self.buffer_updated(n, now_us))
        return acts

    def on_timer(self, kind: TimerKind, now_us: int) -> list[Action]:
        if kind is TimerKind.THROTTLE_RETRY:
            if self.state in OPEN_STATES:
                self.wants_read = True
                return self._run(now_us, [])
            return []
        if kind is TimerKind.RECONNECT:
            return self._on_reconnect_timer(now_us)
        if kind is TimerKind.CONNECTION_READY:
            return self._on_ready_timer(now_us)   # session.py (ms_connection_ready_timeout)
        if kind is TimerKind.IDLE:
            if self._has_socket:
                return self._fault("idle for longer than ms_connection_idle_timeout", now_us)
        return []

    # --- output -------------------------------------------------------------------------------------
    def has_output(self) -> bool:
        if self._out:
            return True
        st = self.state
        # `is S.OPEN` first, then by id(): a set of members hashes each in Python (Enum.__hash__)
        if (st is _OPEN or id(st) in _OPEN_IDS) and self._has_socket:
            return self._outq.count > 0 or self._keepalive_pending or (
                self.in_seq > self._acked_seq and not self.policy.lossy)   # _ack_due, inlined
        return False

    def take_output(self) -> list[BytesLike]:
        """Every buffer ready to be written now, in order (many messages and one ACK per call)."""
        st = self.state
        if (st is _OPEN or id(st) in _OPEN_IDS) and self._has_socket:
            return self._write_open()   # open_state.py: the same, and the messages and ACK of OPEN
        out, self._out = self._out, []
        if out:
            self.stats["bytes_out"] += len(out[0]) if len(out) == 1 else sum(map(len, out))
        return out
