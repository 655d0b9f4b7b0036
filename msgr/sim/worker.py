"""Simulated workers: the threads a messenger's connections live on.

In the real messenger every connection belongs to one ``Worker`` for its
life, and work for it that starts elsewhere (an application ``send_message``,
a replace/adopt, poke or stop decided by another connection, a new accept or
connect) is posted to that worker's external queue
(``EventCenter.dispatch_event_external``). A worker runs its queue in FIFO
order, in one batch per loop turn; queues of different workers are
independent, so posts to connections on different workers may run in either
order.

:class:`SimWorker` models exactly that: one FIFO queue per worker, drained in
turns, and every turn is a simulator event placed by the network's seeded
RNG, so the seed chooses how the workers' turns interleave (with socket
events, timers and each other). With one worker every post of a messenger
runs in the order it was made; with more, the seed explores the orders.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from msgr.sim.network import SimEvent, SimNetwork

__all__ = ["SimWorker", "pick_worker"]


class SimWorker:
    """One simulated worker thread: a FIFO of posted calls, run in turns the seed places."""

    __slots__ = ("net", "name", "references", "_queue", "_turn")

    def __init__(self, net: SimNetwork, name: str) -> None:
        self.net = net
        self.name = name
        self.references = 0     # connections living here (as Worker.references: least-loaded placement)
        self._queue: deque[tuple[Callable[[], None], str]] = deque()
        self._turn: SimEvent | None = None

    def __repr__(self) -> str:
        return f"<SimWorker {self.name} refs={self.references} queued={len(self._queue)}>"

    def post(self, fn: Callable[[], None], what: str) -> None:
        """Queue ``fn`` for this worker's next turn (dispatch_event_external)."""
        self._queue.append((fn, what))
        if self._turn is None:
            self._schedule()

    def _schedule(self) -> None:
        lo, hi = self.net.params.post_delay_us
        self._turn = self.net.call_later(self.net.rng.randint(lo, hi), self._run_turn, f"turn {self.name}")

    def _run_turn(self) -> None:
        """Run what was queued when the turn began; calls posted meanwhile wait for the next turn."""
        self._turn = None
        batch, self._queue = self._queue, deque()
        for fn, what in batch:
            self.net.log(f"{self.name} runs {what}")
            fn()
        if self._queue and self._turn is None:
            self._schedule()

    def queued(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        """The process died: queued calls never run."""
        self._queue.clear()
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None


def pick_worker(net: SimNetwork, workers: list[SimWorker]) -> SimWorker:
    """NetworkStack.get_worker: the least-loaded worker; the seed breaks ties."""
    least = min(w.references for w in workers)
    tied = [w for w in workers if w.references == least]
    w = tied[0] if len(tied) == 1 else tied[net.rng.randrange(len(tied))]
    w.references += 1
    return w
