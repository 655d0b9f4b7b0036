"""What a ProtocolV1 needs from the messenger it belongs to.

The real implementation is ``msgr.messenger.MessengerHost``; the simulator
(``msgr.sim``) and unit tests provide their own. Nothing here touches
sockets, threads or the OS clock, so the protocol stays sans-IO.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from msgr.config import Config
from msgr.entity import EntityAddr, EntityName
from msgr.policy import Policy
from msgr.throttle import Throttle

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1


class MessageSigner(Protocol):
    """Signs and checks message footers on one session (``msgr.auth.signatures.SessionSigner``)."""

    def sign(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
             middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
        """The signature to put in an outgoing message's footer."""

    def check(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
              middle_len: int, data_crc: int, data_len: int, seq: int, sig: int) -> None:
        """Raise a DecodeError (a fault of the session) unless ``sig`` signs this incoming message."""


class ConnectAuthorizer(Protocol):
    """One connect attempt's authorizer (``msgr.auth.tickets.Authorizer`` for cephx).

    ``protocol`` and ``payload`` go into ``ceph_msg_connect``; the methods raise a MsgrError
    (a fault of the attempt) on what the peer answers wrongly."""

    protocol: int
    payload: bytes

    def add_challenge(self, sealed_challenge: bytes) -> None:
        """Answer the service's CHALLENGE_AUTHORIZER: ``payload`` becomes the answered authorizer."""

    def verify_reply(self, reply: bytes) -> object:
        """Check the service's authorizer reply (READY/SEQ) proves it opened our ticket."""

    def signer(self, features: int, sign_messages: bool) -> MessageSigner | None:
        """The session's message signer for the negotiated ``features`` (None: no signing)."""


class AuthClient(Protocol):
    """What a messenger asks of its auth client (``msgr.auth.auth_client.CephxAuthClient``)."""

    def get_authorizer(self, peer_type: int) -> ConnectAuthorizer | None:
        """A fresh authorizer for a connect to a peer of this type; None: auth none."""


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """A service's answer to the authorizer of one incoming connect.

    ``ok``: accept (``reply`` goes with READY/SEQ: the proof we opened the ticket). Not ok with a
    ``challenge``: answer CHALLENGE_AUTHORIZER with ``reply``; the challenge is handed back with
    the next connect on the same socket. Not ok without: BADAUTHORIZER (``reason`` says why).
    ``signer_for(features, sign_messages)`` gives the session's signer once accepted."""

    ok: bool
    reply: bytes = b""
    challenge: object = None
    reason: str = ""
    signer_for: Callable[[int, bool], MessageSigner | None] | None = None


class AuthServer(Protocol):
    """What a messenger asks of its auth server (``msgr.auth.auth_server.CephxAuthServer``)."""

    def verify_authorizer(self, peer_type: int, protocol: int, blob: bytes,
                          challenge: object) -> AuthVerdict | None:
        """The verdict on a connect's authorizer; None: auth none is allowed for this peer, the
        handshake's own auth-none rule decides. ``challenge``: what the last verdict on this
        socket challenged with (None if none)."""


class ProtocolHost(Protocol):
    my_name: EntityName
    config: Config
    dispatch_throttle: Throttle   # ms_dispatch_throttle_bytes, messenger-wide
    rng: random.Random            # out_seq randomisation, fault injection (seeded in the simulator)

    def get_myaddr(self) -> EntityAddr:
        """Our bound (or learned) legacy address; blank IP / port 0 for a pure client."""

    def learned_addr(self, seen: EntityAddr) -> None:
        """The peer told us how it sees us; adopt the IP if ours is blank."""

    def get_global_seq(self, at_least: int = 0) -> int:
        """The process-wide connect counter: ``counter = max(counter, at_least) + 1``; returns it."""

    def get_policy(self, peer_type: int) -> Policy:
        """The policy for peers of this entity type (the default policy if none was set)."""

    def lookup_conn(self, peer_addr: EntityAddr) -> ProtocolV1 | None:
        """The registered session for this peer address, if any."""

    def register_conn(self, proto: ProtocolV1) -> bool:
        """Register ``proto`` under ``proto.peer_addr``; False if another one is registered."""

    def unregister_conn(self, proto: ProtocolV1) -> None:
        """Forget ``proto`` (only if it is the one registered under its address; then remember its
        ``peer_global_seq`` for :meth:`gone_peer_global_seq` if it is lossless)."""

    def gone_peer_global_seq(self, peer_addr: EntityAddr) -> int:
        """The highest ``peer_global_seq`` of the lossless sessions with ``peer_addr`` that were unregistered
        lately (0 if none; msgr/protocol/gone_peers.py): a connect from that address with a lower
        global_seq is older than one of them (PROTOCOL.md §7 row 8a)."""

    def wall_clock(self) -> tuple[int, int]:
        """(sec, nsec) of the wall clock, for KEEPALIVE2 stamps."""

    def get_authorizer(self, peer_type: int) -> ConnectAuthorizer | None:
        """An authorizer for a connect to a peer of this type (a fresh one per call: the host reads
        its clock for ticket expiry); None: auth none. May raise a MsgrError (no ticket for that
        service, an expired one): the attempt faults."""

    def verify_authorizer(self, peer_type: int, protocol: int, blob: bytes,
                          challenge: object) -> AuthVerdict | None:
        """The auth server's verdict on an incoming connect's authorizer (AuthServer); None: no
        auth server, or auth none allowed for this peer (the handshake's auth-none rule)."""

    def session_lock(self, proto: ProtocolV1) -> AbstractContextManager[Any]:
        """Held while this machine reads and changes ``proto``, another session of the messenger (an
        accept deciding on the registered session, as Ceph holds ``existing->lock``): that session's own
        calls run under the same lock, so the decision and its marks are atomic. A single-threaded host
        returns a no-op context."""
