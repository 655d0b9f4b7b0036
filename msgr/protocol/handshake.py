"""Both roles of the v1 handshake, with the server's decision table (PROTOCOL.md §7) as data.

Client: banner -> read the server's 281 bytes -> our address + connect ->
reply, handled by ``CLIENT_REPLIES`` (PROTOCOL.md §8). Server: banner + addresses ->
read 145 -> connect (+ authorizer) -> ``decide()`` walks ``SERVER_DECISIONS``
top to bottom; the first row whose condition holds says what to do. Rows
follow docs/PROTOCOL.md §7 with the corrections observed on a real pacific
monitor (docs/REAL_CEPH.md §11-12).
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from msgr.entity import AF_INET, AF_INET6, LEGACY_ADDR_SIZE, EntityAddr, EntityName
from msgr.errors import BadAddressError, BadTagError, RemoteProtocolError, WrongNodeError
from msgr.features import CEPHX_V2, MSG_AUTH, RECONNECT_SEQ
from msgr.policy import Policy
from msgr.protocol.actions import (
    Action,
    ConnEvent,
    Notify,
    OpenSocket,
    PokeExisting,
    Registered,
    ReplaceExisting,
    StopExisting,
)
from msgr.protocol.base import Blocked, ProtocolBase
from msgr.protocol.host import AuthVerdict
from msgr.protocol.states import States as S
from msgr.wire import (
    BANNER,
    BANNER_SHOWN,
    BANNER_SIZE,
    CONNECT_LOSSY,
    ConnectMsg,
    ConnectReply,
    Tag,
    check_banner,
    check_banner_prefix,
    pack_connect_reply,
    pack_u64,
    proto_version,
    unpack_server_identify,
    unpack_u64,
)

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.host import ConnectAuthorizer, MessageSigner
    from msgr.protocol.protocol_v1 import ProtocolV1



CEPH_AUTH_UNKNOWN, CEPH_AUTH_NONE, CEPH_AUTH_CEPHX = 0, 1, 2
#: Families a legacy entity_addr_t may carry (0: a blank address), as EntityAddr.decode_legacy takes them.
LEGACY_FAMILIES = frozenset({0, AF_INET, AF_INET6})
#: A cephx authorizer reply is 36 bytes and a challenge 32 (observed); more than this is not a reply.
MAX_AUTHORIZER_REPLY = 4096
#: Challenges answered on one socket before the attempt is given up (a real OSD challenges once).
MAX_AUTH_CHALLENGES = 3
# auth none's two verdicts (frozen: one of each serves every session)
_AUTH_OK, _AUTH_BAD = AuthVerdict(True), AuthVerdict(False)


# --- authorizers (auth none) ------------------------------------------------------------------------

def build_authorizer(my_name: EntityName, peer_type: int) -> tuple[int, bytes]:
    """(authorizer_protocol, bytes) for a connect: nothing toward a monitor, else AUTH_NONE."""
    if peer_type == EntityName.TYPE_MON and my_name.type != EntityName.TYPE_MON:
        return CEPH_AUTH_UNKNOWN, b""  # clients authenticate to monitors with MAuth afterwards
    ident = (my_name.id if my_name.id is not None else str(my_name.num)).encode()
    return CEPH_AUTH_NONE, struct.pack("<BII", 1, my_name.type, len(ident)) + ident + struct.pack("<Q", 0)


def verify_authorizer(peer_type: int, protocol: int, blob: bytes) -> bool:
    """Auth none: no authorizer is fine except from a MON peer; an AUTH_NONE blob must decode."""
    if protocol == CEPH_AUTH_UNKNOWN and not blob:
        return peer_type != EntityName.TYPE_MON
    if protocol != CEPH_AUTH_NONE or len(blob) < 9 or blob[0] != 1:
        return False
    slen: int
    (slen,) = struct.unpack_from("<I", blob, 5)
    return len(blob) >= 9 + slen + 8


# --- the server decision table (PROTOCOL.md §7) --------------------------------------------------------

class Do(enum.Enum):
    REPLY = "reply"      # a non-success reply; then wait for another connect on this socket
    OPEN = "open"        # open() here: a new session (or, on the replaced session itself, the retry)
    REPLACE = "replace"  # the existing session takes this socket (lossless) or is stopped (lossy)
    WAIT = "wait"        # our own attempt wins the race: poke it, reply WAIT


# Existing, ConnectCtx, Decision: built per connect read, so not frozen (a frozen dataclass sets each
# field through object.__setattr__, a slow call per field); nothing changes them once built.
@dataclass(slots=True)
class Existing:
    """What the decision needs to know about the registered session for the peer's address."""
    closed: bool
    replacing: bool      # being replaced by another incoming connection right now
    pgs: int             # its peer_global_seq
    cseq: int            # its connect_seq
    lossy: bool
    open_or_standby: bool
    server: bool         # its policy is a server policy
    client: bool         # its policy makes us a server's lossless client, and the peer never answered WAIT


@dataclass(slots=True)
class ConnectCtx:
    c: ConnectMsg
    my_proto: int
    required: int        # policy.features_required, plus CEPHX_V2 for a cephx authorizer (row 2)
    auth_ok: bool        # row 4
    policy: Policy       # for the peer's type
    e: Existing | None   # None: no registered session, or it is this connection (row 7)
    replacing: bool      # this connection is the target of a replace (the retry after RETRY_GLOBAL)
    peer_lt_me: bool     # peer's legacy address < ours, in Ceph's memcmp order (rows 17/18)
    auth_challenge: bool = False   # row 5: the auth server challenges this authorizer (cephx)
    gone_pgs: int = 0    # highest peer_global_seq of our unregistered sessions with this address (row 8a)

    @property
    def ex(self) -> Existing:
        """The existing session: the rows after 9 are reached only when there is one."""
        assert self.e is not None
        return self.e


@dataclass(slots=True)
class Decision:
    row: int
    do: Do
    tag: Tag | None = None
    global_seq: int = 0
    connect_seq: int = 0
    reset_from_peer: bool = False


Outcome = Callable[[int, ConnectCtx], Decision]


def _reply(tag: Tag, g: Callable[[ConnectCtx], int] = lambda x: 0,
           c: Callable[[ConnectCtx], int] = lambda x: 0) -> Outcome:
    return lambda row, x: Decision(row, Do.REPLY, tag, g(x), c(x))


def _do(what: Do, reset: bool = False) -> Outcome:
    return lambda row, x: Decision(row, what, reset_from_peer=reset)


def _pgs(x: ConnectCtx) -> int:
    return x.ex.pgs


def _cseq1(x: ConnectCtx) -> int:
    return x.ex.cseq + 1


#: (row of PROTOCOL.md §7, condition, outcome). Row 2 is folded into ``required``; row 7 (existing is this
#: connection -> treated as none) is settled while building the context.
SERVER_DECISIONS: list[tuple[int, str, Callable[[ConnectCtx], bool], Outcome]] = [
    (1, "protocol_version is not ours", lambda x: x.c.protocol_version != x.my_proto,
     _reply(Tag.BADPROTOVER)),
    (3, "peer lacks required features", lambda x: bool(x.required & ~x.c.features), _reply(Tag.FEATURES)),
    (4, "authorizer rejected", lambda x: not x.auth_ok and not x.auth_challenge, _reply(Tag.BADAUTHORIZER)),
    (5, "authorizer challenged (cephx)", lambda x: x.auth_challenge, _reply(Tag.CHALLENGE_AUTHORIZER)),
    (6, "stateless server: always a new session", lambda x: x.policy.server and x.policy.lossy, _do(Do.OPEN)),
    # pymsgr: with no session, a connect older than one we had with that address is a stale attempt too
    # (the socket of an attempt the peer has since replaced, read late): opened, it would become a second
    # session beside the one the peer keeps (issue 11). A live peer retries with a higher global_seq
    (8, "stale global_seq: older than a session we had", lambda x: x.e is None and not x.replacing
     and x.c.global_seq < x.gone_pgs, _reply(Tag.RETRY_GLOBAL, lambda x: x.gone_pgs)),
    (8, "peer resumes a session we do not have", lambda x: x.e is None and x.c.connect_seq > 0
     and not x.replacing, _reply(Tag.RESETSESSION)),
    (9, "no existing session", lambda x: x.e is None, _do(Do.OPEN)),
    (10, "existing session is closed", lambda x: x.ex.closed, _do(Do.OPEN)),
    (11, "existing is being replaced", lambda x: x.ex.replacing, _reply(Tag.RETRY_GLOBAL, _pgs)),
    (12, "stale global_seq", lambda x: x.c.global_seq < x.ex.pgs, _reply(Tag.RETRY_GLOBAL, _pgs)),
    (13, "existing is lossy", lambda x: x.ex.lossy, _do(Do.REPLACE)),
    (14, "peer restarted (connect_seq 0)", lambda x: x.c.connect_seq == 0 and x.ex.cseq > 0,
     _do(Do.REPLACE, reset=True)),
    (15, "old attempt (connect_seq too low)", lambda x: x.c.connect_seq < x.ex.cseq,
     _reply(Tag.RETRY_SESSION, c=_cseq1)),
    (16, "same connect_seq, existing open/standby, resetcheck, cseq 0",
     lambda x: x.c.connect_seq == x.ex.cseq and x.ex.open_or_standby and x.policy.resetcheck and x.ex.cseq == 0,
     _do(Do.REPLACE)),
    (16, "same connect_seq, existing open/standby", lambda x: x.c.connect_seq == x.ex.cseq
     and x.ex.open_or_standby, _reply(Tag.RETRY_SESSION, c=_cseq1)),
    # a race's two sides must agree on one winner: a server lets the incoming win (Ceph), so the lossless
    # client of a server lets its own attempt win whatever the addresses say (Ceph decides by address
    # there, and when the client's sorts above, both sides replace and both sockets die: issue 11)
    (17, "connection race, incoming wins (lower peer address or we serve; never a client of a server)",
     lambda x: x.c.connect_seq == x.ex.cseq and not x.ex.client and (x.peer_lt_me or x.ex.server),
     _do(Do.REPLACE)),
    (18, "connection race, our attempt wins", lambda x: x.c.connect_seq == x.ex.cseq, _do(Do.WAIT)),
    (19, "peer resumes a session we reset", lambda x: x.policy.resetcheck and x.ex.cseq == 0,
     _reply(Tag.RESETSESSION)),
    (20, "normal reconnect", lambda x: True, _do(Do.REPLACE)),
]


# members read per accepted session, as module constants (the Enum hook: states.States)
_REPLY, _WAIT, _REPLACE = Do.REPLY, Do.WAIT, Do.REPLACE
_TAG_SEQ, _TAG_READY = Tag.SEQ, Tag.READY
_NOTIFY_ACCEPT = Notify(ConnEvent.ACCEPT)   # actions are frozen: one serves every session
# (our address, the banner + its legacy encoding) as start_accept last sent them: the same for every
# session a messenger accepts until its address changes (a new object). Replaced whole, so workers
# sharing it read a consistent pair; messengers taking turns only re-encode.
_banner_and_me: tuple[EntityAddr | None, bytes] = (None, b"")


def decide(x: ConnectCtx) -> Decision:
    """The first row of ``SERVER_DECISIONS`` whose condition holds."""
    for row, _why, cond, outcome in SERVER_DECISIONS:
        if cond(x):
            return outcome(row, x)
    raise AssertionError("row 20 always matches")  # pragma: no cover


# --- the client's handling of reply tags (PROTOCOL.md §8): tag -> method ------------------------------
CLIENT_REPLIES: dict[int, str] = {
    Tag.FEATURES: "_on_reply_refused",
    Tag.BADPROTOVER: "_on_reply_refused",
    Tag.BADAUTHORIZER: "_on_reply_refused",
    Tag.CHALLENGE_AUTHORIZER: "_on_reply_challenge",
    Tag.RESETSESSION: "_on_reply_resetsession",
    Tag.RETRY_GLOBAL: "_on_reply_retry_global",
    Tag.RETRY_SESSION: "_on_reply_retry_session",
    Tag.WAIT: "_on_reply_wait",
    Tag.SEQ: "_on_reply_ready",
    Tag.READY: "_on_reply_ready",
}


class HandshakeMixin(ProtocolBase):
    """Handshake readers and helpers of :class:`~msgr.protocol.protocol_v1.ProtocolV1`."""

    def _init_handshake(self) -> None:
        self._need_auth = 0
        # it registered itself in its host's session map at some time (only a session does that):
        # else its close has nothing to unregister (a stateless server's lossy sessions)
        self._was_registered = False
        self._connect: ConnectMsg | None = None      # the last connect sent (client) or read (server)
        self._reply: ConnectReply | None = None
        self._authorizer_in = b""                     # kept across retries on one socket (observed)
        self._replacing = False
        self._replace_connect: ConnectMsg | None = None
        # the peer once answered WAIT, which a server never does: our "client of a server" policy is
        # wrong for it (both sides configured as clients), so our races go by address (row 17)
        self._peer_answered_wait = False
        self._reset_from_peer = False
        self._sock_peer: EntityAddr | None = None
        self._sock_local: EntityAddr | None = None
        self._ready_armed = False     # CONNECTION_READY timer (ms_connection_ready_timeout) pending
        self._ready_since_us = 0
        self._authorizer: ConnectAuthorizer | None = None   # ours, on this socket (cephx)
        self._auth_challenged = False  # the next connect resends the authorizer that answers a challenge
        self._auth_challenges = 0      # challenges on this socket (a peer that never stops is refused)
        self._reply_auth = b""         # the authorizer bytes of the connect reply being handled
        self._signer: MessageSigner | None = None
        self._auth_verdict = _AUTH_OK   # the service's verdict on the last connect read (server)
        self._auth_server_challenge: object = None   # what we challenged with on this socket (server)

    # ===== early checks: bytes that can never become valid ===================================================
    # Run by ProtocolV1._run while a handshake reader still waits for its bytes (``Row.peek``): a
    # peer that is not speaking v1 (an HTTP client, an SSH banner) is dropped as soon as what has
    # arrived shows it, not after ms_connection_ready_timeout (Ceph waits for the whole banner).
    def _peek_identify(self, buf: memoryview, off: int, avail: int) -> None:
        """The banner + legacy address(es) in arrival: banner prefix, then each address family."""
        check_banner_prefix(buf, off, avail)
        for at in (BANNER_SIZE, BANNER_SIZE + LEGACY_ADDR_SIZE):
            if avail < at + 10:
                break
            family = int.from_bytes(buf[off + at + 8:off + at + 10], "big")
            if family not in LEGACY_FAMILIES:
                raise BadAddressError(f"entity_addr_t: unknown address family {family}")

    def _peek_connect_reply(self, buf: memoryview, off: int, avail: int) -> None:
        """A connect reply's first byte is its tag: one no v1 server sends ends the attempt now."""
        tag = buf[off]
        if tag not in CLIENT_REPLIES:
            raise BadTagError(f"connect reply tag {tag} is not a v1 reply (not a Ceph peer?): "
                              f"got {bytes(buf[off:off + min(avail, BANNER_SHOWN)])!r}")

    # ===== connect side ==================================================================================
    def start_connect(self, peer_addr: EntityAddr, peer_type: int, now_us: int) -> list[Action]:
        """Begin a session to ``peer_addr``; returns [OpenSocket(addr)] (+ Registered)."""
        if self.state is not S.NONE:
            raise RemoteProtocolError(f"start_connect in state {self.state!r}")
        self.peer_addr, self.peer_type = peer_addr, peer_type
        self.peer_name = EntityName(peer_type)
        self.policy = self.host.get_policy(peer_type).copy()
        acts: list[Action] = []
        if self.host.lookup_conn(peer_addr) is None and self.host.register_conn(cast("ProtocolV1", self)):
            self._was_registered = True
            acts.append(Registered(peer_addr))
        return acts + self._connect_now(now_us)

    def _connect_now(self, now_us: int) -> list[Action]:
        self._reset_recv()
        self._out = []
        self._authorizer_in = b""
        self._authorizer = None
        self._auth_challenged = False
        self._auth_challenges = 0
        self._signer = None
        self.global_seq = self.host.get_global_seq()
        self._reconnect_armed = False
        self._to(S.CONNECTING)
        acts: list[Action] = []
        self._arm_ready_timer(now_us, acts)
        assert self.peer_addr is not None    # start_connect set it
        acts.append(OpenSocket(self.peer_addr))
        return acts

    def on_connected(self, sock_local: EntityAddr, now_us: int) -> list[Action]:
        """The TCP connect completed: our banner is queued."""
        if self.state is not S.CONNECTING or self._reconnect_armed:
            return []  # a stale completion (we moved on, or abandoned that connect and back off)
        self._has_socket = True
        self.wants_read = True
        self._sock_local = sock_local
        self._to(S.CONNECTING_RE)
        self._out.append(BANNER)
        self._to(S.CONNECTING_WAIT_BANNER_AND_IDENTIFY)
        return []

    def _read_server_identify(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        server, seen = unpack_server_identify(buf, off)
        want = self.peer_addr
        assert want is not None              # start_connect set it
        if (server.ip, server.port) != (want.ip, want.port) and not (server.is_blank_ip() and server.port == want.port):
            raise WrongNodeError(f"wrong node: peer at {want} says it is {server}", want, server)
        if want.nonce and server.nonce != want.nonce:
            # same ip:port, another process: not the peer we want (a restarted one)
            raise WrongNodeError(f"wrong node: peer at {want} has nonce {server.nonce}, expected {want.nonce}",
                                 want, server)
        self.host.learned_addr(seen)
        self._out.append(self.host.get_myaddr().encode_legacy())
        self._send_connect()

    def _send_connect(self) -> None:
        self._to(S.CONNECTING_SEND_CONNECT_MSG)
        host = self.host
        peer_type = self.peer_type
        assert peer_type is not None         # start_connect set it
        if not self._auth_challenged:
            self._authorizer = host.get_authorizer(peer_type)   # a fresh one for every connect
        self._auth_challenged = False
        a = self._authorizer
        auth_proto, auth = build_authorizer(host.my_name, peer_type) if a is None else (a.protocol, a.payload)
        c = ConnectMsg(self.policy.features_supported, host.my_name.type, self.global_seq, self.connect_seq,
                       proto_version(host.my_name.type, peer_type, True), auth_proto, len(auth), 0)
        # flags: a real pacific client sends 0 even with a lossy policy (observed); the server decides
        self._connect = c
        self._out.append(c.pack() + auth)
        self._to(S.CONNECTING_WAIT_CONNECT_REPLY)

    def _read_connect_reply(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._reply = ConnectReply.unpack(buf, off)
        self._need_auth = self._reply.authorizer_len
        if self._need_auth > MAX_AUTHORIZER_REPLY:
            raise RemoteProtocolError(f"connect reply claims a {self._need_auth}-byte authorizer")
        self._to(S.CONNECTING_WAIT_CONNECT_REPLY_AUTH)

    def _last_reply(self) -> ConnectReply:
        """The connect reply being handled (read in CONNECTING_WAIT_CONNECT_REPLY)."""
        assert self._reply is not None
        return self._reply

    def _read_connect_reply_auth(self, buf: memoryview, off: int, n: int, now_us: int,
                                 acts: list[Action]) -> Blocked | None:
        # an authorizer reply is only verified with cephx; with auth none it is ignored
        self._reply_auth = bytes(buf[off:off + n])
        if self._replacing:
            # an accepted connection of the peer's is replacing this session (ReplaceExisting is posted,
            # adopt_socket comes next): the reply to our own attempt is not acted on, as Ceph sets the
            # existing session's state to NONE when it decides. Acted on, a RETRY_SESSION sent one more
            # connect with a higher connect_seq on the socket about to close; the peer read it as a
            # newer attempt and replaced its session in turn (row 20), closing the socket we adopt: both
            # adopted sockets died, both sides reconnected at once and did it again, forever (issue 11)
            return self._blocked()
        method = CLIENT_REPLIES.get(self._last_reply().tag)
        if method is None:
            raise RemoteProtocolError(f"unknown connect reply tag {self._last_reply().tag}")
        handled: Blocked | None = getattr(self, method)(now_us, acts)
        return handled

    def _on_reply_refused(self, now_us: int, acts: list[Action]) -> Blocked | None:
        r = self._last_reply()
        why = Tag(r.tag).name
        if r.tag == Tag.FEATURES:
            why += f" (missing {r.features & ~self.policy.features_supported:#x})"
        acts.extend(self._fault(f"peer refused our connect: {why}", now_us))
        return self._blocked()

    def _on_reply_challenge(self, now_us: int, acts: list[Action]) -> Blocked | None:
        """CHALLENGE_AUTHORIZER: reseal our authorizer with the answer and connect again on this socket."""
        a = self._authorizer
        if a is None:
            return self._on_reply_refused(now_us, acts)   # auth none has nothing to answer with
        self._auth_challenges += 1
        if self._auth_challenges > MAX_AUTH_CHALLENGES:
            raise RemoteProtocolError(f"peer challenged our authorizer {self._auth_challenges} times")
        a.add_challenge(self._reply_auth)   # a challenge we cannot open raises: the attempt faults
        self._auth_challenged = True
        self._send_connect()
        return None

    def _on_reply_resetsession(self, now_us: int, acts: list[Action]) -> None:
        if self._once_ready:
            acts.extend(self._reset_session())
        else:
            # never OPEN since it began or was last reset: none of its messages was ever written or
            # delivered, so the peer can hold none of them and nothing is lost. Ceph resets anyway and
            # discards the queue; here it starts over as the fresh session it is (PROTOCOL.md §8). This
            # is a session we accepted whose success reply the peer never read (it dropped that socket
            # for another in a race), now reconnecting with connect_seq 2 (issue 11)
            self.connect_seq = 0
        self._send_connect()

    def _on_reply_retry_global(self, now_us: int, acts: list[Action]) -> None:
        self.global_seq = self.host.get_global_seq(self._last_reply().global_seq)
        self._send_connect()

    def _on_reply_retry_session(self, now_us: int, acts: list[Action]) -> None:
        if self._last_reply().connect_seq <= self.connect_seq:
            raise RemoteProtocolError(f"RETRY_SESSION with connect_seq {self._last_reply().connect_seq} "
                                      f"<= ours {self.connect_seq}")
        self.connect_seq = self._last_reply().connect_seq
        self._send_connect()

    def _on_reply_wait(self, now_us: int, acts: list[Action]) -> Blocked | None:
        self._to(S.WAIT)
        self._peer_answered_wait = True
        acts.extend(self._fault("peer answered WAIT (connection race, its attempt wins)", now_us))
        return self._blocked()

    def _on_reply_ready(self, now_us: int, acts: list[Action]) -> Blocked | None:
        missing = self.policy.features_required & ~self._last_reply().features
        if missing:
            acts.extend(self._fault(f"peer lacks required features {missing:#x}", now_us))
            return self._blocked()
        if self._authorizer is not None:
            self._authorizer.verify_reply(self._reply_auth)   # the peer proves it opened our ticket
            if self.host.config.cephx_require_signatures and not self._last_reply().features & MSG_AUTH:
                acts.extend(self._fault("peer cannot sign messages (no MSG_AUTH) and "
                                        "cephx_require_signatures is set", now_us))
                return self._blocked()
        if self._last_reply().tag == Tag.SEQ:
            self._to(S.CONNECTING_WAIT_ACK_SEQ)
            return None
        self._client_ready(now_us, acts)
        return None

    def _read_ack_seq(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._outq.discard_requeued_up_to(unpack_u64(buf, off))
        self._out.append(pack_u64(self.in_seq))
        self._client_ready(now_us, acts)

    def _client_ready(self, now_us: int, acts: list[Action]) -> None:
        r = self._last_reply()
        self.peer_global_seq = r.global_seq
        self.policy.lossy = bool(r.flags & CONNECT_LOSSY)   # the server's word wins
        self.connect_seq = r.connect_seq
        self.features = r.features & self.policy.features_supported
        a = self._authorizer
        self._signer = None if a is None else a.signer(self.features, self.host.config.cephx_sign_messages)
        self._cancel_ready_timer(acts)
        self._to(S.CONNECTING_READY)
        self._ready(now_us, acts, ConnEvent.CONNECT)

    # ===== accept side ===================================================================================
    def start_accept(self, sock_peer: EntityAddr, sock_local: EntityAddr, now_us: int) -> list[Action]:
        """A socket was accepted: banner + our address + the peer's address as seen are queued."""
        if self.state is not S.NONE:
            raise RemoteProtocolError(f"start_accept in state {self.state!r}")
        self._has_socket = True
        self._sock_peer, self._sock_local = sock_peer, sock_local
        self._auth_server_challenge = None
        self._to(S.ACCEPTING)
        # our own address as the messenger knows it (blank for a wildcard bind until learned), as Ceph
        # does; a client accepts a blank claim when port and nonce match
        global _banner_and_me
        me = self.host.get_myaddr()
        mine = _banner_and_me
        if mine[0] is not me:
            mine = _banner_and_me = (me, BANNER + me.encode_legacy())
        seen = sock_peer   # as accept() gave it: already a legacy address without nonce
        if seen.nonce or seen.type != EntityAddr.TYPE_LEGACY:
            seen = EntityAddr(EntityAddr.TYPE_LEGACY, 0, sock_peer.ip, sock_peer.port, sock_peer.family)
        self._out.append(mine[1] + seen.encode_legacy())
        self._to(S.ACCEPTING_WAIT_BANNER_ADDR)
        acts: list[Action] = []
        self._arm_ready_timer(now_us, acts)
        return acts

    def _read_client_banner_addr(self, buf: memoryview, off: int, n: int, now_us: int,
                                 acts: list[Action]) -> None:
        check_banner(buf, off, off + n)
        addr = EntityAddr.decode_legacy(buf, off + len(BANNER))
        if addr.is_blank_ip():
            assert self._sock_peer is not None   # start_accept set it
            addr = addr.with_ip(self._sock_peer.ip)   # keep the port it announced
        self.peer_addr = addr
        self._to(S.ACCEPTING_WAIT_CONNECT_MSG)

    def _read_connect_msg(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._connect = ConnectMsg.unpack(buf, off)
        self._need_auth = self._connect.authorizer_len
        self._to(S.ACCEPTING_WAIT_CONNECT_MSG_AUTH)

    def _read_connect_msg_auth(self, buf: memoryview, off: int, n: int, now_us: int,
                               acts: list[Action]) -> Blocked | None:
        c = self._connect
        assert c is not None and self.peer_addr is not None   # read in the states before this one
        if n:
            self._authorizer_in = bytes(buf[off:off + n])
        # (a retry with authorizer_len 0 re-checks the previous bytes: observed on pacific)
        host = self.host
        policy = host.get_policy(c.host_type).copy()
        existing = None
        if not (policy.server and policy.lossy):
            existing = host.lookup_conn(self.peer_addr)
            if existing is self:
                existing = None
        if existing is None:
            return self._decide_and_act(c, policy, None, now_us, acts)
        # as Ceph holds existing->lock here: the existing session's own calls (on its worker) run under the
        # same lock, so it cannot move between what we read of it, the decision and the marks we set on it
        with host.session_lock(existing):
            return self._decide_and_act(c, policy, existing, now_us, acts)

    def _decide_and_act(self, c: ConnectMsg, policy: Policy, existing: ProtocolV1 | None, now_us: int,
                        acts: list[Action]) -> Blocked | None:
        """The decision table on a consistent view of ``existing`` (its session lock is held), and its outcome."""
        host = self.host
        my = host.my_name.type
        assert self.peer_addr is not None   # read with the banner
        e_view = None
        if existing is not None:
            e_view = Existing(existing.state is S.CLOSED, existing._replacing, existing.peer_global_seq,
                              existing.connect_seq, existing.policy.lossy,
                              existing.state is S.STANDBY or existing.is_connected(), existing.policy.server,
                              existing.policy.client_of_server and not existing._peer_answered_wait)
        v = host.verify_authorizer(c.host_type, c.authorizer_protocol, self._authorizer_in,
                                   self._auth_server_challenge)
        if v is None:   # auth none rules
            v = _AUTH_OK if verify_authorizer(c.host_type, c.authorizer_protocol, self._authorizer_in) else _AUTH_BAD
        elif v.challenge is not None:
            self._auth_server_challenge = v.challenge
        self._auth_verdict = v
        x = ConnectCtx(c, proto_version(my, c.host_type, False),
                       self._required_of(c, policy),
                       v.ok, policy, e_view, self._replacing,
                       # rows 17/18 only, reached with an existing session
                       e_view is not None
                       and self.peer_addr.legacy_cmp_key() < host.get_myaddr().legacy_cmp_key(),
                       not v.ok and v.challenge is not None,
                       host.gone_peer_global_seq(self.peer_addr)
                       if existing is None and not (policy.server and policy.lossy) else 0)
        d = decide(x)
        self.last_decision = d
        if d.do is _REPLY:
            assert d.tag is not None             # every REPLY row names its tag
            auth = v.reply if d.tag in (Tag.CHALLENGE_AUTHORIZER, Tag.BADAUTHORIZER) else b""
            self._out.append(self._error_reply(c, policy, d.tag, d.global_seq, d.connect_seq, auth))
            self._to(S.ACCEPTING_WAIT_CONNECT_MSG)
            return None
        if d.do is _WAIT:
            assert existing is not None          # rows 10-20 are reached only with an existing session
            acts.append(PokeExisting(existing))
            self._out.append(self._error_reply(c, policy, Tag.WAIT))
            self._to(S.ACCEPTING_WAIT_CONNECT_MSG)
            return None
        if d.do is _REPLACE:
            assert existing is not None
            if existing.policy.lossy:
                host.unregister_conn(existing)
                acts.append(StopExisting(existing))
            else:
                # mark it now: a third connect arriving before adopt_socket runs gets RETRY_GLOBAL (row 11)
                existing._replacing = True
                existing._replace_connect = c
                self._has_socket = False
                self._to(S.CLOSED)
                acts.append(ReplaceExisting(existing, d.reset_from_peer))
                return self._blocked()
        self._server_open(c, policy, d.reset_from_peer, now_us, acts)
        return None

    def _required_of(self, c: ConnectMsg, policy: Policy) -> int:
        """Features the peer must have: the policy's; with a cephx authorizer CEPHX_V2 (row 2), and
        MSG_AUTH when our options require signatures of this kind of peer (as Ceph's accept does)."""
        if c.authorizer_protocol != CEPH_AUTH_CEPHX:
            return policy.features_required
        cfg = self.host.config
        daemon = c.host_type in (EntityName.TYPE_OSD, EntityName.TYPE_MDS, EntityName.TYPE_MGR)
        sign = cfg.cephx_require_signatures or (cfg.cephx_cluster_require_signatures if daemon
                                                else cfg.cephx_service_require_signatures)
        return policy.features_required | CEPHX_V2 | (MSG_AUTH if sign else 0)

    def _error_reply(self, c: ConnectMsg, policy: Policy, tag: Tag, gseq: int = 0, cseq: int = 0,
                     auth: bytes = b"") -> bytes:
        """A non-success reply (PROTOCOL.md §4.5): our protocol version, features = offered & supported | required;
        ``auth``: the authorizer bytes it carries (a cephx challenge)."""
        required = self._required_of(c, policy)
        return ConnectReply(tag, (c.features & policy.features_supported) | required, gseq, cseq,
                            proto_version(self.host.my_name.type, c.host_type, False), len(auth), 0).pack() + auth

    def _server_open(self, c: ConnectMsg, policy: Policy, reset_from_peer: bool, now_us: int,
                     acts: list[Action]) -> None:
        """open() (PROTOCOL.md §7.2): the success reply, then SEQ exchange or READY."""
        host = self.host
        self.policy = policy
        self.peer_type = c.host_type
        v = self._auth_verdict   # accepted by _decide_and_act on this socket
        if self.peer_name is None or self.peer_name.type != c.host_type:
            self.peer_name = EntityName(c.host_type)
        self.connect_seq = c.connect_seq + 1
        self.peer_global_seq = c.global_seq
        seq = c.features & RECONNECT_SEQ == RECONNECT_SEQ and not reset_from_peer and not self._reset_from_peer
        if not seq:
            self.in_seq = 0
        reply = pack_connect_reply(_TAG_SEQ if seq else _TAG_READY, policy.features_supported,
                                   host.get_global_seq(), self.connect_seq,
                                   proto_version(host.my_name.type, c.host_type, False), len(v.reply),
                                   CONNECT_LOSSY if policy.lossy else 0)
        self.features = policy.features_supported & c.features
        self._signer = None if v.signer_for is None else v.signer_for(self.features, host.config.cephx_sign_messages)
        self._replacing = False
        self._reset_from_peer = False
        self._replace_connect = None
        if not (policy.server and policy.lossy and not policy.register_lossy_clients):
            assert self.peer_addr is not None    # read with the client's banner
            if host.lookup_conn(self.peer_addr) is not self:
                if not host.register_conn(cast("ProtocolV1", self)):
                    raise RemoteProtocolError(f"another session for {self.peer_addr} registered meanwhile")
                self._was_registered = True
                acts.append(Registered(self.peer_addr))
        acts.append(_NOTIFY_ACCEPT)
        if seq:
            self._out.append(reply + v.reply + pack_u64(self.in_seq))   # one buffer: one iovec
            self._to(S.ACCEPTING_WAIT_SEQ)
        else:
            self._out.append(reply + v.reply)
            self._cancel_ready_timer(acts)
            self._to(S.ACCEPTING_READY)
            self._ready(now_us, acts, None)

    def _read_wait_seq(self, buf: memoryview, off: int, n: int, now_us: int, acts: list[Action]) -> None:
        self._outq.discard_requeued_up_to(unpack_u64(buf, off))
        self._cancel_ready_timer(acts)
        self._to(S.ACCEPTING_READY)
        self._ready(now_us, acts, None)
