"""EventCenter: one epoll loop with file events, a timer heap and a queue of
external (cross-thread) events, in Ceph's vocabulary.

One turn (``process_events``), in Ceph's order:

1. compute the poll timeout: 0 if external events are queued, else the time
   to the nearest timer (capped by the caller's ``timeout_us``), handed to
   epoll in seconds, which CPython rounds *up* to whole milliseconds: timers
   never fire early and a sub-millisecond wait is never a spin;
2. ``epoll_wait``; for each fired fd look its entry up again (an earlier
   callback in this turn may have deleted or replaced it) and run the
   callbacks for the bits still registered;
3. run due timers in (deadline, creation) order; timers created during this
   step wait for the next turn, so a timer that re-arms itself with delay 0
   cannot starve the poller;
4. swap the external queue out under the lock and run what was in it; events
   queued meanwhile wait for the next turn (which then does not sleep).

Threading: the loop thread is the *owner*.  File and time events may only be
changed by the owner; other threads use ``dispatch_event_external`` /
``submit_to``.  Before an owner is set (set-up phase, or a center driven by
hand in tests) any thread may call anything.
"""
from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._call import WaitedCall
from .clock import Clock, MonotonicClock
from .errors import CenterClosedError, EventCenterError, WrongThreadError
from .poller import EVENT_READABLE, EVENT_WRITABLE, FROM_EPOLL, MAX_EVENTS, Poller

__all__ = ["EventCenter"]

_log = logging.getLogger("eventcenter")
_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns   # MonotonicClock's source, read inline by the loop
_heappush = heapq.heappush
_heappop = heapq.heappop

FileCallback = Callable[[int, int], Any]
Callback = Callable[[], Any]

# Compact the timer heap when more than this many cancelled entries are in it
# *and* they are more than half of it: amortised O(1) per cancel.
_COMPACT_MIN = 64
# Rounds of external events a stopping owner still runs before it lets go.
_DRAIN_ROUNDS = 8


def _closed_poll(timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
    raise CenterClosedError("process_events() on a closed EventCenter")


class EventCenter:
    """An epoll event loop; see the module docstring for the turn and thread rules."""

    def __init__(self, name: str = "", clock: Clock | None = None) -> None:
        self.name = name
        self._clock = clock if clock is not None else MonotonicClock()
        self._now_us = self._clock.now_us
        # the loop reads the OS clock inline when it is the monotonic one (no method call per turn)
        self._mono = type(self._clock) is MonotonicClock
        #: The latest OS monotonic reading (ns) on this loop: taken once as each poll returns, and
        #: advanced by a callback that reads the clock later and stores its reading here (the
        #: connections do, at the end of each socket event). Callbacks take it as their start time
        #: (no reading of their own); the loop checks timers against it (process_events).
        self.now_ns = _monotonic_ns()
        # now_ns is no staler than the callbacks of the last turn (it ran no timer or external event)
        self._now_fresh = False
        self._poller = Poller()
        self._poll: Callable[[float | None, int], list[tuple[int, int]]] = self._poller.poll
        # fd -> [mask, read_cb, write_cb]: a list, not an object, because the
        # loop reads it per fired fd and indexing is the cheapest access.
        self._files: dict[int, list[Any]] = {}
        # [deadline_us, id, callback]; ids grow, so equal deadlines pop in
        # creation order.  Cancelled entries stay until popped or compacted,
        # with their callback dropped at once: a cancelled timer does not keep
        # what it would have called (a closed connection) alive meanwhile.
        self._heap: list[list[Any]] = []
        self._timers: dict[int, list[Any]] = {}  # live timer ids only -> their heap entry
        self._cancelled = 0
        self._next_id = 1
        self._lock = threading.Lock()
        self._external: list[Callback] = []
        # True only while the owner is about to block in epoll_wait; see
        # dispatch_event_external for the protocol.
        self._sleeping = False
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Registered straight with the poller, not in _files: the loop
        # recognises it by number and drains it without a callback.
        self._poller.set(self._wake_fd, 0, EVENT_READABLE)
        self._owner: int | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._owner is not None else "idle")
        return (f"<EventCenter {self.name!r} {state} files={len(self._files)} "
                f"timers={len(self._timers)}>")

    # --- thread ownership ------------------------------------------------

    def in_thread(self) -> bool:
        """True when called on the thread that runs this center's loop."""
        return self._owner == _get_ident()

    def _wrong_thread(self, what: str) -> WrongThreadError:
        return WrongThreadError(f"{what} on EventCenter {self.name!r} from a thread that does not own it")

    def _set_owner(self) -> None:
        """Make the calling thread the owner (the Worker does this as its thread starts)."""
        with self._lock:
            if self._closed:
                raise CenterClosedError(f"EventCenter {self.name!r} is closed")
            if self._owner is not None and self._owner != _get_ident():
                raise self._wrong_thread("_set_owner")
            self._owner = _get_ident()

    def _stop_owning(self) -> None:
        """Run what is still queued, then give up ownership (the owner calls this as it exits).

        External events queued before this returns run on this thread, for up
        to ``_DRAIN_ROUNDS`` rounds (events that keep queueing new ones must
        not keep a stopping worker alive).  What is left stays queued: it runs
        when an owner starts again, and is dropped by ``close()``.
        """
        for _ in range(_DRAIN_ROUNDS):
            with self._lock:
                batch = self._external
                if not batch:
                    self._owner = None
                    return
                self._external = []
            self._run_batch(batch)
        with self._lock:
            self._owner = None

    # --- file events (owner only) -------------------------------------------

    def create_file_event(self, fd: int, mask: int, callback: FileCallback) -> None:
        """Call ``callback(fd, fired_mask)`` while ``fd`` is ready for ``mask``.

        READABLE and WRITABLE are added independently and may have different
        callbacks; when both fire and share one callback it runs once.
        Level-triggered: it runs every turn while the fd stays ready.
        """
        owner = self._owner
        if owner is not None and owner != _get_ident():
            raise self._wrong_thread("create_file_event")
        if not mask or mask & ~(EVENT_READABLE | EVENT_WRITABLE):
            raise ValueError(f"bad file event mask {mask!r}")
        if self._closed:
            raise CenterClosedError(f"EventCenter {self.name!r} is closed")
        fe = self._files.get(fd)
        old = 0 if fe is None else fe[0]
        # Always tell the kernel, even when the mask is unchanged: that also
        # re-registers an fd number that was closed and reused behind our back.
        self._poller.set(fd, old, old | mask)
        if fe is None:
            fe = self._files[fd] = [0, None, None]
        fe[0] = old | mask
        if mask & EVENT_READABLE:
            fe[1] = callback
        if mask & EVENT_WRITABLE:
            fe[2] = callback

    def delete_file_event(self, fd: int, mask: int) -> None:
        """Stop watching ``fd`` for ``mask``; bits not registered and unknown fds are ignored.

        Delete an fd's events *before* closing it: epoll forgets a closed fd
        only when no duplicate of it is left open.
        """
        owner = self._owner
        if owner is not None and owner != _get_ident():
            raise self._wrong_thread("delete_file_event")
        fe = self._files.get(fd)
        if fe is None:
            return
        old = fe[0]
        new = old & ~mask
        if new == old:
            return
        if not self._closed:
            self._poller.set(fd, old, new)
        if new == 0:
            del self._files[fd]
            return
        fe[0] = new
        if not new & EVENT_READABLE:
            fe[1] = None
        if not new & EVENT_WRITABLE:
            fe[2] = None

    # --- time events (owner only) ---------------------------------------------

    def create_time_event(self, delay_us: int, callback: Callback) -> int:
        """Call ``callback()`` once, no earlier than ``delay_us`` µs from now; returns its id."""
        owner = self._owner
        if owner is not None and owner != _get_ident():
            raise self._wrong_thread("create_time_event")
        tid = self._next_id
        self._next_id = tid + 1
        # the OS clock read inline as the loop does (two timers are armed per accepted session)
        now = _monotonic_ns() // 1000 if self._mono else self._now_us()
        entry = [now + (delay_us if delay_us > 0 else 0), tid, callback]
        _heappush(self._heap, entry)
        self._timers[tid] = entry
        return tid

    def delete_time_event(self, tid: int) -> None:
        """Cancel a timer; already fired, already cancelled and unknown ids are ignored.

        O(1): the heap entry stays and is skipped when it surfaces; the heap is
        rebuilt only once cancelled entries are the majority.
        """
        owner = self._owner
        if owner is not None and owner != _get_ident():
            raise self._wrong_thread("delete_time_event")
        entry = self._timers.pop(tid, None)
        if entry is None:
            return
        entry[2] = None
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > _COMPACT_MIN and self._cancelled * 2 > len(heap):
            live = self._timers
            # slice-assign: the loop may hold a reference to this very list
            heap[:] = [e for e in heap if e[1] in live]
            heapq.heapify(heap)
            self._cancelled = 0

    # --- external events (any thread) -----------------------------------------

    def dispatch_event_external(self, callback: Callback) -> None:
        """Queue ``callback()`` to run on the loop thread; safe from any thread.

        Wake-up coalescing: the owner sets ``_sleeping`` just before it blocks
        and then re-checks the queue; a producer appends and then, under the
        lock, tests-and-clears ``_sleeping``.  Under the GIL these steps are
        sequentially consistent, so either the owner sees the new event and
        polls with timeout 0, or exactly one producer sees ``_sleeping`` and
        writes the eventfd.  While the loop is busy, dispatching costs a lock
        and an append: no syscall.
        """
        with self._lock:
            if self._closed:
                raise CenterClosedError(f"EventCenter {self.name!r} is closed")
            self._external.append(callback)
            if self._sleeping:
                self._sleeping = False
                # inside the lock: close() cannot free the fd under us
                os.eventfd_write(self._wake_fd, 1)

    def submit_to(self, callback: Callback, wait: bool = True) -> Any:
        """Run ``callback()`` on the loop thread and, if ``wait``, return its result.

        On the loop thread itself (or when no loop thread owns the center) it
        runs at once, in the caller.  With ``wait`` an exception raised by the
        callback is re-raised here; without it, the return value is None and
        exceptions are logged by the loop.
        """
        if self._owner == _get_ident():
            result = callback()
            return result if wait else None
        call = WaitedCall(callback) if wait else None
        with self._lock:
            if self._closed:
                raise CenterClosedError(f"EventCenter {self.name!r} is closed")
            queued = self._owner is not None
            if queued:
                self._external.append(call if call is not None else callback)
                if self._sleeping:
                    self._sleeping = False
                    os.eventfd_write(self._wake_fd, 1)
        if not queued:
            result = callback()
            return result if wait else None
        return call.wait() if call is not None else None

    # --- the loop ---------------------------------------------------------------

    def process_events(self, timeout_us: int | None = None) -> int:
        """Run one loop turn, waiting at most ``timeout_us`` µs (None: until something happens).

        Returns the number of callbacks run (file, timer and external).
        """
        owner = self._owner
        if owner is not None and owner != _get_ident():
            raise self._wrong_thread("process_events")
        heap = self._heap
        wait = -1 if timeout_us is None or timeout_us < 0 else timeout_us
        if heap:
            if self._mono:
                # the worker's blocking turns follow each other directly: the last turn's latest
                # reading serves (stale only by callbacks that stored none: a timer then fires that
                # much later, never early); any other caller, or after timers or external events, reads
                until_timer = heap[0][0] - (
                    self.now_ns if self._now_fresh and timeout_us is None else _monotonic_ns()) // 1000
            else:
                until_timer = heap[0][0] - self._now_us()
            if until_timer <= 0:
                wait = 0
            elif wait < 0 or until_timer < wait:
                wait = until_timer
        if wait:
            self._sleeping = True
            if self._external:  # re-check after announcing the sleep (see dispatch_event_external)
                self._sleeping = False
                wait = 0
        # seconds; CPython's epoll.poll rounds up to whole ms
        events = self._poll(wait / 1e6 if wait > 0 else wait, MAX_EVENTS)
        self._sleeping = False
        self.now_ns = _monotonic_ns()   # the turn's one reading: the callbacks' start (see now_ns)

        n = 0
        if events:
            files = self._files
            for fd, ev in events:
                fe = files.get(fd)
                if fe is None:
                    if fd == self._wake_fd:
                        try:
                            os.eventfd_read(fd)
                        except BlockingIOError:
                            pass
                    else:
                        # deleted earlier in this turn (unregister is then a
                        # harmless ENOENT) or left in the kernel by a close
                        # before delete, which would otherwise fire forever
                        self._poller.forget(fd)
                    continue
                fired = FROM_EPOLL[ev & 31] & fe[0]
                if fired & EVENT_READABLE:
                    cb = fe[1]
                    fired_w = 0   # the usual event: readable alone
                    if fired != EVENT_READABLE and cb is not fe[2]:
                        # writable too, with its own callback: it runs after the read callback
                        fired_w, fired = EVENT_WRITABLE, EVENT_READABLE
                    try:
                        cb(fd, fired)
                    except Exception:
                        self._callback_raised("file", cb, fd)
                    n += 1
                    if not fired_w:
                        continue
                    # the read callback may have removed WRITABLE or the whole fd
                    fe = files.get(fd)
                    if fe is None or not fe[0] & EVENT_WRITABLE:
                        continue
                elif not fired:
                    continue
                cb = fe[2]
                try:
                    cb(fd, EVENT_WRITABLE)
                except Exception:
                    self._callback_raised("file", cb, fd)
                n += 1

        fresh = True
        # due timers against the latest reading: one that fell due after it waits for a later turn
        # (no earlier than its deadline; late by at most the callbacks that stored no reading)
        if heap and heap[0][0] <= (self.now_ns // 1000 if self._mono else self._now_us()):
            n += self._process_time_events()
            fresh = False
        if self._external:
            with self._lock:
                batch = self._external
                self._external = []
            n += self._run_batch(batch)
            fresh = False
        self._now_fresh = fresh
        return n

    def _callback_raised(self, kind: str, cb: Callback | FileCallback, fd: int | None = None) -> None:
        """Log a callback's exception (called from its except block); the loop goes on."""
        where = "" if fd is None else f" for fd {fd}"
        _log.exception("EventCenter %r: %s callback %r%s raised", self.name, kind, cb, where)

    def _process_time_events(self) -> int:
        """Run the due timers that existed when this step began; returns how many ran."""
        heap = self._heap
        timers = self._timers
        now = self._now_us()
        limit = self._next_id
        n = 0
        while heap:
            deadline, tid, cb = heap[0]
            # a timer created by a callback here has the largest id among equal
            # deadlines, so once one surfaces no older due timer is left
            if deadline > now or tid >= limit:
                break
            _heappop(heap)
            if timers.pop(tid, None) is None:
                self._cancelled -= 1
                continue
            try:
                cb()
            except Exception:
                self._callback_raised("timer", cb)
            n += 1
        return n

    def _run_batch(self, batch: list[Callback]) -> int:
        for cb in batch:
            try:
                cb()
            except Exception:
                self._callback_raised("external", cb)
        return len(batch)

    # --- teardown -----------------------------------------------------------------

    def close(self) -> None:
        """Free the epoll fd and the eventfd; drop timers, file events and queued events.

        Queued ``submit_to(wait=True)`` callers get :class:`CenterClosedError`.
        Not allowed while a loop thread owns the center (stop the worker first).
        Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            if self._owner is not None and self._owner != _get_ident():
                raise EventCenterError(
                    f"close() on EventCenter {self.name!r} while its loop thread runs; stop it first")
            self._closed = True
            pending = self._external
            self._external = []
            self._poll = _closed_poll
            self._poller.close()
            os.close(self._wake_fd)
        self._files.clear()
        self._heap.clear()
        self._timers.clear()
        for cb in pending:
            if isinstance(cb, WaitedCall):
                cb.fail(CenterClosedError(f"EventCenter {self.name!r} closed before the call ran"))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def __del__(self) -> None:
        # last resort against fd leaks; close() is the API
        if not getattr(self, "_closed", True) and getattr(self, "_owner", 1) is None:
            try:
                self.close()
            except Exception:
                pass
