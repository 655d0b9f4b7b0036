"""Fault injection with Ceph's option names.

* ``ms_inject_socket_failures = N``: about one in N socket reads or writes
  shuts the socket down first (the read or write then fails like a real
  reset and goes down the normal fault path).
* ``ms_inject_internal_delays = s``: sleep ``s`` seconds at race-prone points
  (just before accept/replace decisions) to widen connection races.
* ``ms_inject_delay_type`` / ``_probability`` / ``_max``: messages from peers
  of the listed entity types are delivered late (in order) with that
  probability, by a random delay up to ``_max`` seconds.

Every random choice comes from a :class:`random.Random` handed in by the
owner (seeded from ``ms_inject_seed``), so a run can be replayed.
"""
from __future__ import annotations

import logging
import random
import socket
import time

from msgr.config import Config
from msgr.entity import EntityName

_log = logging.getLogger("msgr.inject")


class FaultInjector:
    """The fault-injection decisions of one connection."""

    __slots__ = ("socket_failures", "internal_delay_s", "delay_types", "delay_probability",
                 "delay_max_us", "rng", "injected")

    def __init__(self, config: Config, rng: random.Random) -> None:
        self.socket_failures = int(config.ms_inject_socket_failures)
        self.internal_delay_s = float(config.ms_inject_internal_delays)
        self.delay_types = frozenset(config.ms_inject_delay_type.split())
        self.delay_probability = float(config.ms_inject_delay_probability)
        self.delay_max_us = int(float(config.ms_inject_delay_max) * 1_000_000)
        self.rng = rng
        self.injected = 0

    @property
    def active(self) -> bool:
        """True if any socket-level injection is on (the hot path checks this once)."""
        return self.socket_failures > 0

    def maybe_fail_socket(self, sock: socket.socket | None, where: str) -> bool:
        """Roll the dice for one read or write; on a hit shut ``sock`` down and return True."""
        n = self.socket_failures
        if n <= 0 or sock is None or self.rng.randrange(n) != 0:
            return False
        self.injected += 1
        _log.debug("injecting socket failure on %s (fd %d)", where, sock.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def internal_delay(self, where: str) -> None:
        """Sleep at a race-prone point (``ms_inject_internal_delays``)."""
        s = self.internal_delay_s
        if s > 0:
            _log.debug("injecting internal delay of %.3fs at %s", s, where)
            time.sleep(s)

    def delivery_delay_us(self, peer_type: int | None) -> int:
        """How long to hold back a message from a peer of ``peer_type`` (0 = deliver now)."""
        if not self.delay_types or peer_type is None or self.delay_probability <= 0:
            return 0
        if EntityName.type_name(peer_type) not in self.delay_types:
            return 0
        if self.rng.random() >= self.delay_probability:
            return 0
        return int(self.rng.random() * self.delay_max_us)
