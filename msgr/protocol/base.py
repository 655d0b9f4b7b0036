"""The state and helpers the parts of ProtocolV1 share, declared once.

:class:`~msgr.protocol.protocol_v1.ProtocolV1` is assembled from three mixins (handshake.py,
open_state.py, session.py) over the driver in protocol_v1.py; each part reads fields and calls
helpers that another part owns. :class:`ProtocolBase` declares them with their types, so every
part is checked against one interface instead of reaching into names nobody declared. It has no
behaviour: the fields are set by ``ProtocolV1.__init__`` and the ``_init_*`` methods, and the
methods listed under ``TYPE_CHECKING`` are implemented by the part named beside them.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from msgr._typing import BytesLike
    from msgr.entity import EntityAddr, EntityName
    from msgr.policy import Policy
    from msgr.protocol.actions import Action, ConnEvent
    from msgr.protocol.host import MessageSigner, ProtocolHost
    from msgr.protocol.outq import Framer, OutQueue
    from msgr.protocol.states import State
    from msgr.wire import ConnectMsg


class Blocked(enum.Enum):
    """What a reader returns to stop the read loop for now (waiting on a throttle, a fault, ...)."""

    BLOCKED = "blocked"


BLOCKED = Blocked.BLOCKED


class ProtocolBase:
    """Fields and helpers of one msgr v1 session that its parts use from each other."""

    # --- the session (protocol_v1.py) ---------------------------------------------------------------
    host: ProtocolHost
    # the owner performing this session's actions (AsyncConnection, or a simulator's stand-in for
    # it): opaque here, handed to every received message as its connection
    connection: Any
    state: State
    peer_addr: EntityAddr | None
    peer_type: int | None
    peer_name: EntityName | None
    features: int
    policy: Policy
    connect_seq: int
    peer_global_seq: int
    global_seq: int
    in_seq: int
    wants_read: bool
    last_keepalive_us: int
    last_keepalive_ack_us: int
    last_keepalive_ack_stamp: tuple[int, int]
    stats: dict[str, int]
    _crc_header: bool
    _crc_data: bool
    _outq: OutQueue
    _out: list[BytesLike]              # control frames waiting for take_output
    _framer: Framer | None
    _acked_seq: int
    _keepalive_pending: bool
    _has_socket: bool
    _once_ready: bool
    _backoff_us: int
    _reconnect_armed: bool
    _was_registered: bool             # registered itself in the session map at some time (handshake.py)
    _rbuf: bytearray                   # the receive buffer; unread bytes are [_rpos, _rend)
    _rmv: memoryview                   # a view of _rbuf
    _rpin: Any                         # _cwire.pin(_rbuf) once a batch scan made it, else None
    _rpos: int
    _rend: int
    # --- the handshake (handshake.py) ----------------------------------------------------------------
    _authorizer_in: bytes
    _replacing: bool
    _replace_connect: ConnectMsg | None
    _reset_from_peer: bool
    _sock_peer: EntityAddr | None
    _sock_local: EntityAddr | None
    _ready_armed: bool
    _ready_since_us: int
    _signer: MessageSigner | None      # set when a cephx session signs its messages (handshake.py)
    _auth_server_challenge: object     # a service's cephx challenge on this socket (handshake.py)

    if TYPE_CHECKING:  # pragma: no cover
        # protocol_v1.py
        def _to(self, new: State) -> None: ...
        def _make_room(self, need: int) -> None: ...
        def _reset_recv(self) -> None: ...
        def is_connected(self) -> bool: ...
        def _notable_fault(self, reason: str, error: Exception | None) -> bool: ...

        # handshake.py
        def _connect_now(self, now_us: int) -> list[Action]: ...

        # open_state.py
        def _ready(self, now_us: int, acts: list[Action], event: ConnEvent | None) -> None: ...
        def _release_partial(self) -> None: ...

        # session.py
        @staticmethod
        def _blocked() -> Blocked: ...
        def _fault(self, reason: str, now_us: int, error: Exception | None = None) -> list[Action]: ...
        def _close(self, reason: str, now_us: int, reset: bool) -> list[Action]: ...
        def _reset_session(self) -> list[Action]: ...
        def _arm_ready_timer(self, now_us: int, acts: list[Action]) -> None: ...
        def _cancel_ready_timer(self, acts: list[Action]) -> None: ...
