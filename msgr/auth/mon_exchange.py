"""Run a :class:`~msgr.auth.cephx_client.CephxClient` exchange over MAuth/MAuthReply.

Blocking glue for applications (the probe, tests): ``send`` puts an MAuth on
the monitor connection, ``recv`` returns the next MAuthReply (or raises on a
timeout). The protocol logic stays in the sans-IO client.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from msgr.auth.cephx_client import CephxClient
from msgr.auth.errors import AuthError
from msgr.messages.auth import CEPH_AUTH_CEPHX, MAuth, MAuthReply

__all__ = ["authenticate", "renew", "fetch_rotating"]


def _loop(client: CephxClient, protocol: int, payload: bytes, send: Callable[[MAuth], None],
          recv: Callable[[], MAuthReply], clock: Callable[[], float], max_rounds: int,
          lock: AbstractContextManager[Any]) -> int:
    rounds = 0
    while True:
        send(MAuth(protocol, payload))
        r = recv()
        rounds += 1
        with lock:   # the client's tickets change here only (never held across a round trip)
            nxt = client.handle_reply(r.protocol, r.result, r.global_id, r.result_bl, clock(),
                                      r.result_msg)
        if nxt is None:
            return rounds
        if rounds >= max_rounds:
            raise AuthError(f"cephx did not finish in {max_rounds} round trips")
        protocol, payload = CEPH_AUTH_CEPHX, nxt


def authenticate(client: CephxClient, send: Callable[[MAuth], None],
                 recv: Callable[[], MAuthReply], clock: Callable[[], float] = time.time,
                 max_rounds: int = 8, lock: AbstractContextManager[Any] | None = None) -> int:
    """From the negotiation to the last ticket; returns the number of round trips.

    ``lock`` (if given) is held while a reply changes the client's tickets, for users of those
    tickets on other threads (msgr.auth.auth_client)."""
    lock = lock or contextlib.nullcontext()
    with lock:
        protocol, payload = client.initial_request(client.global_id)
    return _loop(client, protocol, payload, send, recv, clock, max_rounds, lock)


def renew(client: CephxClient, send: Callable[[MAuth], None], recv: Callable[[], MAuthReply],
          clock: Callable[[], float] = time.time, max_rounds: int = 8,
          lock: AbstractContextManager[Any] | None = None) -> int:
    """Renew what is due (auth ticket and/or service tickets) on an authenticated session."""
    lock = lock or contextlib.nullcontext()
    with lock:
        if not client.needs_renewal(clock()):
            return 0
        payload = client.build_request(clock())
    return _loop(client, CEPH_AUTH_CEPHX, payload, send, recv, clock, max_rounds, lock)


def fetch_rotating(client: CephxClient, send: Callable[[MAuth], None], recv: Callable[[], MAuthReply],
                   clock: Callable[[], float] = time.time,
                   lock: AbstractContextManager[Any] | None = None) -> int:
    """CEPHX_GET_ROTATING_KEY on an authenticated session: ``client.rotating`` is then set."""
    lock = lock or contextlib.nullcontext()
    with lock:
        payload = client.build_rotating_request()
    return _loop(client, CEPH_AUTH_CEPHX, payload, send, recv, clock, 4, lock)
