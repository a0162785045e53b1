"""Listener-first scheduling: at most ``slots`` streams compute at once, and the next to compute is the one whose
listener needs audio soonest (earliest deadline first).

Each stream runs in a thread of its own.  Left alone, every stream's thread competes for the cores and for
Python's GIL at once: a new stream's first chunk queues behind every other stream's next chunk, however far
ahead of its listener that stream is.  A voice gives each stream a deadline (for its first chunk, its arrival
plus a target; afterwards the moment its listener's buffer runs dry: the audio sent so far minus the time since
the first chunk) and computes each chunk inside :meth:`Scheduler.turn`; a stream far ahead waits while new
streams' first chunks and streams close to running dry take the slots.

A thread that blocks on something other than compute while holding a slot (a stream waiting for the chunk a
lockstep engine makes for it: melstream.runners.lockstep) gives its slot up for the wait with :func:`waiting`.
Both that wait and the wait for a turn are counted per thread (:func:`waited_s`), so that a voice can tell the
time its streams computed from the time they waited (melstream.serving.capacity).

A deadline is not the moment the listener runs dry but :data:`DELIVERY_MARGIN_S` before it: a chunk computed
just in time still has to reach Triton, cross the network and be decoded by the client, and the threads that
do that share the cores with the ones that compute.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: a stream's first chunk is due this long after its request arrived
FIRST_CHUNK_TARGET_S = 0.05
#: a later chunk is due this long before its listener's buffer runs dry (delivery: Triton, the network, the client)
DELIVERY_MARGIN_S = 0.05

_held = threading.local()  # the scheduler and deadline of the slot this thread holds, if any; seconds waited


def listener_deadline(arrived: float, first_sent: float | None, audio_sent_s: float) -> float:
    """When a stream's next chunk is due (the clock of ``arrived``): ``arrived`` + :data:`FIRST_CHUNK_TARGET_S`
    until its first chunk has gone; then :data:`DELIVERY_MARGIN_S` before the ``audio_sent_s`` seconds sent since
    ``first_sent`` have played (its listener's buffer runs dry)."""
    if first_sent is None:
        return arrived + FIRST_CHUNK_TARGET_S
    return first_sent + audio_sent_s - DELIVERY_MARGIN_S


def waited_s() -> float:
    """Seconds this thread has spent waiting for a turn or inside :func:`waiting`, since it started (a counter:
    callers take differences)."""
    return float(getattr(_held, "waited", 0.0))


def _count_wait(since: float) -> None:
    _held.waited = waited_s() + (time.perf_counter() - since)


class Scheduler:
    """``slots`` concurrent turns, granted earliest deadline first (ties: first come)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a scheduler needs at least 1 slot, got {slots}")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._waiting: list[tuple[float, int, threading.Event]] = []
        self._order = itertools.count()
        self.granted_out_of_order = 0  # turns given to a later arrival with an earlier deadline (diagnostics, tests)

    @contextmanager
    def turn(self, deadline: float) -> Iterator[None]:
        """Hold a slot for the block (``deadline``: any clock, the same for every caller)."""
        self.acquire(deadline)
        previous = getattr(_held, "slot", None)
        _held.slot = (self, deadline)
        try:
            yield
        finally:
            _held.slot = previous
            self.release()

    def acquire(self, deadline: float) -> None:
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return
            event = threading.Event()
            heapq.heappush(self._waiting, (deadline, next(self._order), event))
        since = time.perf_counter()
        event.wait()  # set by release(), which hands this thread its slot
        _count_wait(since)

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                _, order, event = heapq.heappop(self._waiting)
                if self._waiting and min(o for _, o, _ in self._waiting) < order:
                    self.granted_out_of_order += 1
                event.set()  # the slot passes straight to the most urgent waiter
            else:
                self._free += 1

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._waiting)


@contextmanager
def waiting() -> Iterator[None]:
    """Give this thread's slot (if it holds one) up while it blocks in the ``with`` body, and take one back
    after, with the same deadline.  The body's time counts as waited (:func:`waited_s`), slot or not."""
    since = time.perf_counter()
    slot = getattr(_held, "slot", None)
    if slot is None:
        try:
            yield
        finally:
            _count_wait(since)
        return
    scheduler, deadline = slot
    scheduler.release()
    try:
        yield
    finally:
        _count_wait(since)
        scheduler.acquire(deadline)
