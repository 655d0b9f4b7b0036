"""The Message base: header fields, payload segments, and the type registry.

A subclass that sets ``TYPE`` registers itself; on receive the registry
builds it with no arguments, fills header/front/middle/data and calls
``decode_payload()``. Unknown types arrive as a plain :class:`Message`.
``encode_payload(features)`` fills ``front`` (and ``middle``/``data``)
from the message's own fields just before it is first sent.

The underscored members of :class:`Message` are the messenger's side of it, not
the application's: the send queue encodes through ``_encode``, the receive path
sets ``_connection``, ``_throttled`` and ``_recv_stamp_us`` (as
:func:`decode_message` builds it), dispatch gives the receive throttles back with
``_release_throttles`` (:func:`release_throttles` for a batch) and msgr.aio keeps them with
``_hold_throttles``. The
public names are those docs/USER_GUIDE.md §5 documents.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from msgr import _cext
from msgr._cwire import R_FOOTER_FLAGS, R_FRONT_CRC
from msgr.entity import EntityName
from msgr.errors import DecodeError, PayloadDecodeError
from msgr.wire import MsgFooter, MsgHeader

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_base import Connection
    from msgr.throttle import Throttle

Buffer = bytes | bytearray | memoryview

_registry: dict[int, type[Message]] = {}
_new_object = object.__new__
_HEADER_INIT = MsgHeader.__init__


class Message:
    """The base of every message type: Ceph's header fields plus three payload segments.

    Subclass it with a ``TYPE`` number (the subclass registers itself, so a received message of
    that type is built as your class), override :meth:`encode_payload` to fill ``front`` (and
    ``middle``/``data``) and :meth:`decode_payload` to read them back; ``HEAD_VERSION`` and
    ``COMPAT_VERSION`` go into the header as Ceph's do. A subclass must be constructible with no
    arguments (the receiver builds it that way before ``decode_payload``). Unknown types arrive
    as a plain ``Message`` with ``header.type`` set and the raw segments.
    """

    TYPE: ClassVar[int] = 0
    HEAD_VERSION: ClassVar[int] = 1
    COMPAT_VERSION: ClassVar[int] = 1

    # a dict so that help(Message) documents the public slots
    __slots__ = {
        "header": "Ceph's message header (msgr.wire.MsgHeader): seq, tid, type, priority, version, "
                  "compat_version, src_type/src_num, segment lengths.",
        "front": "The front segment (bytes-like): what encode_payload writes and decode_payload reads.",
        "middle": "The middle segment (bytes-like; most messages leave it empty).",
        "data": "The data segment (bytes-like): bulk bytes, sent without being copied.",
        "_footer": None, "_connection": None, "_throttled": None, "_encoded_features": None,
        "_recv_stamp_us": None, "__dict__": None,
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        t = cls.__dict__.get("TYPE")
        if t:
            known = _registry.get(t)
            # Two classes claiming one type number would make the receiver build the wrong class,
            # silently; a re-import of the same class (same module and name) is fine.
            if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"message type {t:#x} is already registered to "
                                f"{known.__module__}.{known.__qualname__}; pick another TYPE for {cls.__qualname__}")
            _registry[t] = cls

    def __init__(self) -> None:
        # positional (seq, tid, type, priority, version, lengths, data_off, src_type, src_num,
        # compat_version, reserved, crc), and its __init__ called as a function: calling the class
        # costs ~550 instructions more (type call, a prepended argument tuple), once per message sent
        h = self.header = _new_object(MsgHeader)
        _HEADER_INIT(h, 0, 0, self.TYPE, 0, self.HEAD_VERSION, 0, 0, 0, 0, 0, -1, self.COMPAT_VERSION, 0, 0)
        # a MsgFooter, None, or (received by the batch path) its scan record until first read
        self._footer: MsgFooter | tuple[int, ...] | None = None
        self.front: Buffer = b""
        self.middle: Buffer = b""
        self.data: Buffer = b""
        self._connection: Connection | None = None
        # (throttle, count) pairs taken on receive, given back by _release_throttles()
        self._throttled: Sequence[tuple[Throttle, int]] | None = None
        # features the front was encoded for; None = not encoded yet (re-encoded on requeue)
        self._encoded_features: int | None = None
        self._recv_stamp_us = 0   # when it was read (us, the messenger's clock); 0 if built here

    @property
    def footer(self) -> MsgFooter | None:
        """The footer it was received with (CRCs, flags); None for a message built here."""
        f = self._footer
        if type(f) is tuple:   # built on first read: most dispatchers never look at it
            f = self._footer = MsgFooter(*f[R_FRONT_CRC:R_FOOTER_FLAGS + 1])
        return f  # type: ignore[return-value]

    @footer.setter
    def footer(self, value: MsgFooter | None) -> None:
        self._footer = value

    # --- payload hooks ---------------------------------------------------
    def encode_payload(self, features: int) -> None:
        """Fill ``front`` (and ``middle``/``data``) from the message's fields."""

    def decode_payload(self) -> None:
        """Set the message's fields from ``front`` (and ``middle``/``data``)."""

    # --- accessors as Ceph names them --------------------------------------
    def get_type(self) -> int:
        """The message type number (``header.type``)."""
        return self.header.type

    def get_seq(self) -> int:
        """The session sequence number it was sent or received with (0 before it is sent)."""
        return self.header.seq

    @property
    def tid(self) -> int:
        """The transaction id (``header.tid``): set it on a request, echo it in the reply."""
        return self.header.tid

    @tid.setter
    def tid(self, value: int) -> None:
        self.header.tid = value

    def get_priority(self) -> int:
        """The send priority (``header.priority``; 0 = the messenger's default at send time)."""
        return self.header.priority

    def set_priority(self, prio: int) -> None:
        """Set the send priority (higher goes out first, as Ceph's CEPH_MSG_PRIO_*)."""
        self.header.priority = prio

    def get_source(self) -> EntityName:
        """The sender's entity name, as the header carries it."""
        return EntityName(self.header.src_type, self.header.src_num)

    def get_connection(self) -> Connection | None:
        """The connection a received message came in on (reply through it); None for one built here."""
        return self._connection

    def _set_connection(self, conn: Connection | None) -> None:
        """Attach the connection the message belongs to (done by the receiving side)."""
        self._connection = conn

    def get_payload_len(self) -> int:
        """Bytes of front + middle + data."""
        return len(self.front) + len(self.middle) + len(self.data)

    def _release_throttles(self) -> None:
        """Give back the receive-side throttle reservations (after dispatch)."""
        taken, self._throttled = self._throttled, None
        if taken:
            for throttle, count in taken:
                throttle.put(count)

    def _hold_throttles(self) -> Callable[[], None]:
        """Take over the receive-side throttle reservations: dispatch no longer gives them back,
        the returned function does (once). A dispatcher that hands the message on to be consumed
        later (msgr.aio) calls it when the consumer takes it, so the throttles keep pushing back
        on the sender meanwhile."""
        taken, self._throttled = self._throttled, None

        def release() -> None:
            nonlocal taken
            held, taken = taken, None
            if held:
                for throttle, count in held:
                    throttle.put(count)
        return release

    def _encode(self, features: int) -> None:
        """Encode the payload for ``features`` unless already encoded for them."""
        if self._encoded_features != features:
            if type(self).encode_payload is not _ENCODE_NOTHING:   # no call for a raw message
                self.encode_payload(features)
            self._encoded_features = features
        h = self.header
        t = self.TYPE
        if t:
            h.type = t
        h.front_len, h.middle_len, h.data_len = len(self.front), len(self.middle), len(self.data)
        if h.compat_version == 0:
            h.compat_version = h.version

    def __repr__(self) -> str:
        h = self.header
        return (f"{type(self).__name__}(type={h.type} seq={h.seq} tid={h.tid} "
                f"front={len(self.front)} middle={len(self.middle)} data={len(self.data)})")


_PY_INIT = Message.__init__   # the Python __init__ (what the C one stands for)
_hot = _cext.hotcall()
if _hot is not None:
    # the same __init__ in C (csrc/hotcall.c: the header and the slots written in place, ~5x
    # fewer instructions per message built); it serves a subclass only while its slots are
    # Message's (else it calls the Python one above). It also binds the slots framing reads.
    Message.__init__ = _hot.bind(Message, MsgHeader, _PY_INIT,  # type: ignore[method-assign]
                                 Message.encode_payload, Message._encode)
    # get_connection (a dispatcher's reply goes through it), get_type, get_seq, get_priority: the
    # slots read in C, no Python frame per call
    for _name, _getter in _hot.getters(Message).items():
        setattr(Message, _name, _getter)


def message_class(type: int) -> type[Message]:
    return _registry.get(type, Message)


_MESSAGE_INIT = Message.__init__
_new = object.__new__


def decode_message(header: MsgHeader, front: Buffer, middle: Buffer, data: Buffer,
                   footer: MsgFooter | tuple[int, ...] | None = None, connection: Connection | None = None,
                   recv_stamp_us: int = 0) -> Message:
    """Build the registered class for ``header.type`` and decode its payload.

    The message is built once: a class that keeps ``Message.__init__`` only gets its slots set
    (no throwaway default header); one with its own ``__init__`` (defaults for its decoded
    fields) is built with ``cls()``. ``footer`` may be a ``_cwire.scan_frames`` record: the
    MsgFooter is then built only if someone reads ``msg.footer``. ``connection`` and
    ``recv_stamp_us`` are the receive path's, set before ``decode_payload`` runs. Raises
    :class:`DecodeError` (never anything else) when the payload is bad: any exception of
    ``decode_payload`` becomes one, named after the class.
    """
    cls = _registry.get(header.type, Message)
    if cls.__init__ is _MESSAGE_INIT:
        msg = _new(cls)
        msg._throttled = msg._encoded_features = None
    else:
        msg = cls()
    msg.header, msg._connection, msg._recv_stamp_us = header, connection, recv_stamp_us
    msg.front, msg.middle, msg.data, msg._footer = front, middle, data, footer
    if cls is not Message:
        if cls.HEAD_VERSION and cls.HEAD_VERSION < header.compat_version:
            raise DecodeError(f"{cls.__name__}: compat_version {header.compat_version} is newer than "
                              f"our version {cls.HEAD_VERSION}")
        if cls.decode_payload is _DECODE_NOTHING:
            return msg
        try:
            msg.decode_payload()
        except Exception as exc:
            # a hand-written decoder fails with whatever its parser raises (struct.error, even a
            # bug): it is still the peer's bytes that cannot become this message, so a fault of
            # that connection only, never an escape past the read path's throttle clean-up
            raise PayloadDecodeError(header.type, cls.__name__, exc) from exc
    return msg


_DECODE_NOTHING = Message.decode_payload
_ENCODE_NOTHING = Message.encode_payload


def _decode_record_py(record: tuple[int, ...], view: memoryview, connection: Connection | None,
                      recv_stamp_us: int) -> Message:
    """The received message a ``_cwire.scan`` record describes: header from its fields, segments
    copied out of ``view`` (the receive buffer) at its front offset, the record as its footer
    (:func:`decode_message`, which it raises the errors of). msgr._hotcall's does this in C (and
    for a class with nothing to decode, also what decode_message does)."""
    o, f, m, d = record[22], record[8], record[9], record[10]
    if m or d:
        front, o = (view[o:o + f].tobytes() if f else b""), o + f
        middle, o = (view[o:o + m].tobytes() if m else b""), o + m
        data = view[o:o + d].tobytes() if d else b""
    else:   # the usual small message: a front alone
        front = view[o:o + f].tobytes()
        middle = data = b""
    return decode_message(MsgHeader(*record[3:17]), front, middle, data, record, connection, recv_stamp_us)




def release_throttles(msgs: Sequence[Message]) -> None:
    """``_release_throttles`` of each of ``msgs`` (in order), with one ``put`` per throttle for each
    run of messages holding the same pairs object: the receive path gives the same-size messages of
    one read one shared tuple, so a batch of them costs a put, not one a message."""
    if len(msgs) == 1:   # a round trip's read: no run bookkeeping
        m = msgs[0]
        taken = m._throttled
        if taken:
            m._throttled = None
            for throttle, count in taken:
                throttle.put(count)
        return
    last: Sequence[tuple[Throttle, int]] | None = None
    k = 0
    for m in msgs:
        taken = m._throttled
        if not taken:
            continue
        m._throttled = None
        if taken is last:
            k += 1
            continue
        if last is not None:
            for throttle, count in last:
                throttle.put(count * k)
        last, k = taken, 1
    if last is not None:
        for throttle, count in last:
            throttle.put(count * k)


decode_record = _decode_record_py
_release_throttles_py = release_throttles
if _hot is not None:
    # csrc/hotcall.c: decode_record in C (and decode_message's work for a class with nothing to
    # decode); release_throttles with the _throttled slots read in place (plain Messages only)
    _hot.bind_decode(_registry, _DECODE_NOTHING, decode_message, release_throttles)
    decode_record = _hot.decode_record
    release_throttles = _hot.release_throttles
