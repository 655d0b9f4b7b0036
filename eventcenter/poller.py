"""A thin wrapper over ``select.epoll`` speaking the center's masks.

Why level-triggered (and not Ceph's edge-triggered, nor trio's one-shot):

* A level-triggered fd is reported on every ``epoll_wait`` while it is ready,
  so a callback may read *once* and return.  Edge-triggered requires draining
  to ``EAGAIN`` on every wake-up, and in Python that last, empty ``recv``
  costs a syscall plus a raised and caught ``BlockingIOError`` (~1-2 µs) per
  event, which is more than the whole loop turn we are trying to save.
* No lost wake-ups by construction: if a callback stops early (a throttle is
  full, ``maxevents`` was hit, the callback raised), the kernel reports the fd
  again next turn.  With edge-triggering each of those is a hang.
* The price is that WRITABLE must only be registered while there is data
  waiting for the socket (after a short write / ``EAGAIN``) or the loop spins;
  that is the asyncio / Ceph-connection pattern anyway.
* One-shot would cost an ``epoll_ctl`` re-arm per event: a syscall per event.

``EPOLLERR`` / ``EPOLLHUP`` are reported as both readable and writable (the
way ``selectors`` does it), so whichever callback is registered runs and its
syscall meets the error.
"""
from __future__ import annotations

import select

__all__ = ["EVENT_NONE", "EVENT_READABLE", "EVENT_WRITABLE", "Poller", "FROM_EPOLL"]

EVENT_NONE = 0
EVENT_READABLE = 1
EVENT_WRITABLE = 2

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP

# our mask (0..3) -> epoll mask
_TO_EPOLL = (0, _IN, _OUT, _IN | _OUT)


def _from_epoll(ev: int) -> int:
    mask = 0
    if ev & (_IN | select.EPOLLPRI | _ERR):
        mask |= EVENT_READABLE
    if ev & (_OUT | _ERR):
        mask |= EVENT_WRITABLE
    return mask


# epoll's low 5 bits (IN, PRI, OUT, ERR, HUP) -> our mask: a tuple index per
# fired fd instead of a chain of tests.  We never register for anything above
# bit 4, so ``ev & 31`` loses nothing.
FROM_EPOLL: tuple[int, ...] = tuple(_from_epoll(ev) for ev in range(32))

# Events taken from the kernel per turn.  Level-triggering makes this safe:
# fds beyond it are simply reported again next turn.
MAX_EVENTS = 256


class Poller:
    """Owns one epoll fd.  ``poll`` is epoll's own bound method (no wrapper
    frame on the hot path): ``poll(timeout_s, maxevents) -> [(fd, epoll_events)]``."""

    __slots__ = ("_ep", "poll")

    def __init__(self) -> None:
        self._ep = select.epoll()
        self.poll = self._ep.poll

    def fileno(self) -> int:
        return self._ep.fileno()

    def set(self, fd: int, old_mask: int, new_mask: int) -> None:
        """Move ``fd`` from ``old_mask`` to ``new_mask`` in the kernel's interest list.

        ``old_mask`` is what we believe is registered; it can be stale when a
        registered fd was closed without being deleted (the kernel drops it)
        or its number was reused, so each operation falls back to the other.
        """
        ep = self._ep
        if new_mask == 0:
            if old_mask:
                try:
                    ep.unregister(fd)
                except OSError:  # already gone from the kernel: closed fd (EBADF/ENOENT)
                    pass
            return
        emask = _TO_EPOLL[new_mask]
        if old_mask:
            try:
                ep.modify(fd, emask)
            except FileNotFoundError:  # fd was closed and its number reused
                ep.register(fd, emask)
        else:
            try:
                ep.register(fd, emask)
            except FileExistsError:  # a stale kernel registration for this number
                ep.modify(fd, emask)

    def forget(self, fd: int) -> None:
        """Best-effort removal of an fd the kernel reports but we do not know."""
        try:
            self._ep.unregister(fd)
        except OSError:
            pass

    def close(self) -> None:
        self._ep.close()

    @property
    def closed(self) -> bool:
        """True once the epoll fd is closed."""
        return self._ep.closed
