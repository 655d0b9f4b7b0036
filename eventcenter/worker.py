"""Worker threads and the NetworkStack that hands them out (Ceph's Stack.h vocabulary).

A :class:`Worker` is one thread running one :class:`EventCenter`; every
connection assigned to it lives on that thread.  :class:`NetworkStack` owns
the workers, starts and stops them together and gives a new connection the
least-loaded one.

Stopping: ``Worker.stop()`` asks the loop to end after its current turn.
Pending timers do not run (they are dropped when the center is closed); the
external events queued by then *do* run, on the worker thread, before it
exits (see ``EventCenter._stop_owning``), so ``submit_to(wait=True)`` callers
are never stranded.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from .center import EventCenter
from .clock import Clock
from .errors import EventCenterError, WrongThreadError

__all__ = ["Worker", "NetworkStack", "on_worker_thread"]

_this_thread = threading.local()


def on_worker_thread() -> bool:
    """True on the loop thread of any running Worker (code there must not block on another worker)."""
    return getattr(_this_thread, "worker", None) is not None


class Worker:
    """One event-loop thread owning ``center``; ``references`` counts its connections."""

    def __init__(self, index: int = 0, name: str | None = None, clock: Clock | None = None) -> None:
        self.index = index
        self.name = name if name is not None else f"w{index}"
        self.center = EventCenter(name=self.name, clock=clock)
        self.references = 0  # load: connections assigned (acquire/release)
        self._ref_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<Worker {self.name} refs={self.references} alive={self.is_alive()}>"

    # --- load accounting ------------------------------------------------------

    def acquire(self) -> None:
        """Count one more connection on this worker."""
        with self._ref_lock:
            self.references += 1

    def release(self) -> None:
        """Count one connection fewer (never below zero)."""
        with self._ref_lock:
            if self.references > 0:
                self.references -= 1

    # --- thread life ----------------------------------------------------------

    def is_alive(self) -> bool:
        """True while the worker's loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the loop thread; returns once it owns the center. No-op if running."""
        if self.is_alive():
            if not self._stopping:
                return
            self.join()  # a stop() in flight: let that thread finish first
        if self.center.closed:
            raise EventCenterError(f"worker {self.name}: its center is closed")
        self._stopping = False
        started = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started, errors),
                                        name=f"msgr-worker-{self.name}", daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            self._thread.join()
            raise errors[0]

    def _run(self, started: threading.Event, errors: list[BaseException]) -> None:
        center = self.center
        try:
            center._set_owner()
        except BaseException as exc:
            errors.append(exc)
            started.set()
            return
        started.set()
        _this_thread.worker = self
        process = center.process_events
        try:
            while not self._stopping:
                process(None)  # block until work: stop() wakes us through the queue
        finally:
            _this_thread.worker = None
            center._stop_owning()

    def stop(self) -> None:
        """Ask the loop to end after its current turn; does not wait (see join)."""
        self._stopping = True
        if self.is_alive() and not self.center.closed:
            # an external event both wakes a sleeping loop and, being queued
            # after the flag was set, guarantees the loop re-reads the flag
            self.center.dispatch_event_external(_noop)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop thread to end; True if it has (or never ran)."""
        t = self._thread
        if t is None:
            return True
        if t is threading.current_thread():
            raise WrongThreadError(f"worker {self.name} cannot join itself")
        t.join(timeout)
        return not t.is_alive()

    def close(self) -> None:
        """Stop, join and free the center (its fds, timers, queued events)."""
        self.stop()
        self.join()
        self.center.close()


def _noop() -> None:
    pass


class NetworkStack:
    """A fixed set of workers started and stopped together."""

    def __init__(self, num_workers: int = 2, clock: Clock | None = None,
                 worker_factory: Callable[[int], Worker] | None = None) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self._clock = clock
        self._factory = worker_factory or (lambda i: Worker(i, clock=self._clock))
        self._lock = threading.Lock()  # guards load accounting (get_worker)
        self._life_lock = threading.Lock()  # serialises start() and stop()
        self.workers: list[Worker] = [self._factory(i) for i in range(num_workers)]
        self._running = False

    def __repr__(self) -> str:
        return f"<NetworkStack workers={self.workers!r} running={self._running}>"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    def start(self) -> None:
        """Start every worker; after a ``stop()`` this builds fresh workers first."""
        with self._life_lock:
            if self._running:
                return
            if any(w.center.closed for w in self.workers):
                self.workers = [self._factory(i) for i in range(self.num_workers)]
            started = []
            try:
                for w in self.workers:
                    w.start()
                    started.append(w)
            except BaseException:
                for w in started:
                    w.stop()
                for w in started:
                    w.join()
                raise
            self._running = True

    def get_worker(self) -> Worker:
        """The worker with the fewest references (lowest index on ties), with one reference taken."""
        with self._lock:
            workers = self.workers
            best = workers[0] if len(workers) == 1 else min(workers, key=lambda w: w.references)
            best.acquire()
            return best

    def stop(self) -> None:
        """Stop and join every worker, then close their centers.

        Pending timers and file events are dropped; queued external events run
        on their worker before it exits.  Not callable from a worker thread
        (it would have to join itself).
        """
        me = threading.current_thread()
        with self._life_lock:
            workers = list(self.workers)
            if any(w._thread is me for w in workers):
                raise WrongThreadError("NetworkStack.stop() from one of its own worker threads")
            # the load lock is not held while joining: a worker callback may
            # still call get_worker() during the stop without deadlocking
            for w in workers:
                w.stop()
            for w in workers:
                w.join()
            for w in workers:
                w.center.close()
            self._running = False
