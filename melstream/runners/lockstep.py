"""Lockstep: every stream's recurrence of one step network advanced together, one batched call per step.

A recurrent block (the AttentionDecoder) runs its step network once per frame and feeds each step's outputs
back as the next step's inputs.  With each stream in a thread of its own, N streams made N calls per frame, and
each call paid the Python around it (building inputs, reading outputs, handing threads over) alone; gathering
those calls from N threads (melstream.runners.batching) costs a thread hand-off per call, more than a step.
Here one engine thread per network holds every active stream's recurrence (a :class:`Recurrence`) and, in a
loop, runs one call for all of them: rows stacked, the variable axis zero-padded to the longest row with each
row's length input (the masked networks give a padded row its unpadded values: melstream/nets.py), each row's
outputs cropped back and handed to its recurrence.  A stream's thread only waits for its chunks (a hand-off per
chunk, not per frame).

Listener first: each recurrence has a deadline (:attr:`Recurrence.deadline`: for its first chunk, its start
plus melstream.runners.schedule's ``FIRST_CHUNK_TARGET_S``; afterwards a delivery margin before its listener's buffer
runs dry).  When more rows are ready than one call may carry, calls take them earliest deadline first; and while a
stream is urgent (it waits for its first chunk, or its chunk is due within :attr:`Lockstep.urgent_s`), streams more
than :attr:`Lockstep.ahead_s` ahead of their listeners sit steps out.  Their steps would not only widen the urgent
stream's steps: the chunks they make must be sent, by their streams' threads, in the same process and under the
same interpreter lock as this engine, which then waits for it between steps (measured: with 32 streams asking as
fast as they can, a new stream's second chunk came 100-240 ms after its first, later than its 93 ms of audio).

A call that fails is rerun row by row, so one stream's fault ends that stream only.  Shapes: a recurrence's
``inputs`` have no batch axis (``[N, D]`` for an input declared ``[-1, D]``); the engine adds it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.runners.fixed import slice_axis, variable_axis
from melstream.runners.schedule import listener_deadline

if TYPE_CHECKING:
    from melstream.runners.base import Network

log = logging.getLogger("melstream.lockstep")

#: how far ahead of its listener a stream may be before it sits steps out while another stream is urgent: far
#: enough that a stream asked for faster than real time still gets most of the steps (32 streams asking as fast as
#: they could, none stalled with 2, 4 or 8 s; they made 46, 63 and 90 s of speech a second)
AHEAD_S = 8.0
#: a stream whose next chunk is due within this long is urgent (as is one that waits for its first)
URGENT_S = 0.5
#: what a recurrence's queue holds after its last chunk
END = object()
_serials = itertools.count()


class Recurrence:
    """One stream's recurrence in a :class:`Lockstep`; the block that owns the recursion subclasses it.

    ``inputs``: the step network's data inputs for the next step, without batch axis.  ``size``: the row's size
    on the variable axis.  ``chunks``: what the engine hands the stream (chunks, then :data:`END`, or an
    exception).  Subclasses implement :meth:`advance` and may override :meth:`ready` and :meth:`window`; they
    bump ``version`` whenever a context input (one the engine may keep between steps) changes."""

    def __init__(self, inputs: dict[str, np.ndarray], size: int, *, frame_s: float) -> None:
        self.inputs = inputs
        self.size = size
        self.serial = next(_serials)  # unlike id(), never reused by a later recurrence: the engine's cache keys on it
        self.version = 0
        self.frame_s = frame_s
        self.chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.started = time.monotonic()
        self.first_sent: float | None = None  # when its first chunk was handed over
        self.frames_sent = 0
        self.closed = False  # removed: its stream ended or was cancelled; the engine drops it

    @property
    def deadline(self) -> float:
        """When this stream's listener needs more audio (monotonic seconds)."""
        return listener_deadline(self.started, self.first_sent, self.frames_sent * self.frame_s)

    def ready(self) -> bool:
        """Whether it can take a step now (e.g. its context is filled far enough)."""
        return True

    def window(self) -> tuple[int, int, int]:
        """``(lo, hi, length)``: the part ``[lo, hi)`` of its variable axis the next step sees, and the length input
        (where its sequence ends, counted from ``lo``).  Default: all of it."""
        return 0, self.size, self.size

    def advance(self, outputs: dict[str, np.ndarray], lo: int) -> bool:
        """Take one step's ``outputs`` (without batch axis, cropped to the window), update ``inputs``, and
        :meth:`emit` what is due; True when the recurrence has ended (after emitting its last chunk)."""
        raise NotImplementedError

    def emit(self, chunk: dict[str, np.ndarray], frames: int) -> None:
        """Hand a chunk of ``frames`` frames to the stream."""
        if self.first_sent is None:
            self.first_sent = time.monotonic()
        self.frames_sent += frames
        self.chunks.put(chunk)


class Lockstep:
    """The engine of one step network (``network``, a :class:`~melstream.runners.base.Network` whose
    ``run_rows`` takes a batch).  ``context``: inputs that do not change from step to step unless the
    recurrence bumps its ``version`` (kept between steps instead of copied each step).  ``max_rows``: rows one
    call carries (more ready rows run in several calls per step, earliest deadline first).  ``on_batch`` hears
    ``(network, calls, rows)`` per call (metrics); ``on_busy`` the wall seconds of each call with its rows'
    bookkeeping (the engine is one thread: melstream.serving.capacity's ``engine`` lane)."""

    def __init__(self, network: Network, *, context: Iterable[str] = (), max_rows: int = 64, ahead_s: float = AHEAD_S,
                 urgent_s: float = URGENT_S, on_batch: Callable[[str, int, int], None] | None = None,
                 on_busy: Callable[[float], None] | None = None) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.network = network
        spec = network.spec
        self.max_rows = max_rows
        self.ahead_s = ahead_s
        self.urgent_s = urgent_s
        self.on_batch = on_batch
        self.on_busy = on_busy
        self.context = frozenset(context)
        self._axes = {t.name: variable_axis(t) for t in spec.inputs}
        self._shapes = {t.name: t.shape for t in spec.inputs}
        self._dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs}
        self._out_axes = {t.name: variable_axis(t) for t in spec.outputs}
        self._length = spec.length.name if spec.length is not None else None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._rows: list[Recurrence] = []
        self._thread: threading.Thread | None = None
        self._cache: dict[str, tuple[Any, np.ndarray]] = {}
        self.steps = 0  # calls made (diagnostics and tests)

    # the streams' side ---------------------------------------------------------------------------------
    def add(self, row: Recurrence) -> None:
        with self._lock:
            self._rows.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name=f"lockstep-{self.network.spec.name}")
                self._thread.start()
            self._wake.notify()

    def remove(self, row: Recurrence) -> None:
        """Drop ``row`` (its stream ended, failed or was cancelled); a step running now ignores its outputs."""
        with self._lock:
            row.closed = True
            if row in self._rows:
                self._rows.remove(row)

    def wake(self) -> None:
        """A row may have become ready (its context grew)."""
        with self._lock:
            self._wake.notify()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._rows)

    # the engine ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                groups = self._choose()
                if not groups:
                    # nothing ready: wait for a stream to join or its context to grow (wake()); the timeout only
                    # bounds a wake-up that raced the check
                    self._wake.wait(0.01 if self._rows else 1.0)
                    continue
            for group in groups:
                since = time.perf_counter()
                try:
                    self._step(group)
                except BaseException as e:  # noqa: BLE001 - a fault of the engine itself must end its streams, not hang them
                    log.exception("lockstep %s: a step failed outside the network", self.network.spec.name)
                    for row in group:
                        self._fail(row, e)
                if self.on_busy is not None:
                    self.on_busy(time.perf_counter() - since)

    def _choose(self) -> list[list[Recurrence]]:
        """With the lock held: the rows to step now, in calls of at most ``max_rows``, earliest deadline first."""
        ready = [r for r in self._rows if r.ready()]
        if not ready:
            return []
        now = time.monotonic()
        if len(ready) > 1 and any(r.first_sent is None or r.deadline <= now + self.urgent_s for r in ready):
            # listener first: an urgent stream's chunk before the chunks of streams far ahead of their listeners
            late = now + self.ahead_s
            ready = [r for r in ready if r.first_sent is None or r.deadline <= late]
        if len(ready) > self.max_rows:
            ready.sort(key=lambda r: r.deadline)
        return [ready[i:i + self.max_rows] for i in range(0, len(ready), self.max_rows)]

    def _feed(self, rows: list[Recurrence], windows: list[tuple[int, int, int]]) -> dict[str, np.ndarray]:
        width = max(hi - lo for lo, hi, _ in windows)
        feed: dict[str, np.ndarray] = {}
        for name, axis in self._axes.items():
            if axis is None:
                feed[name] = np.stack([r.inputs[name] for r in rows])
                continue
            key = None
            if name in self.context:  # the same rows, versions and windows as the last step: the same tensor
                key = (width, tuple((r.serial, r.version, w[0], w[1]) for r, w in zip(rows, windows, strict=True)))
                cached = self._cache.get(name)
                if cached is not None and cached[0] == key:
                    feed[name] = cached[1]
                    continue
            shape = list(self._shapes[name])
            shape[axis - 1] = width
            batch = np.zeros((len(rows), *shape), self._dtypes[name])
            index: list[Any] = [0] + [slice(None)] * len(shape)
            for i, (r, (lo, hi, _)) in enumerate(zip(rows, windows, strict=True)):
                index[0] = i
                index[axis] = slice(0, hi - lo)
                source = r.inputs[name]
                batch[tuple(index)] = slice_axis(source, axis - 1, lo, hi)
            feed[name] = batch
            if key is not None:
                self._cache[name] = (key, batch)
        if self._length is not None:
            feed[self._length] = np.array([[length] for _, _, length in windows], np.int64)
        return feed

    def _step(self, rows: list[Recurrence]) -> None:
        windows = [r.window() for r in rows]
        try:
            out = self.network.run_rows(self._feed(rows, windows))
        except Exception:  # noqa: BLE001 - find the row at fault: each alone
            if len(rows) == 1:
                raise
            for row in rows:
                try:
                    self._step([row])
                except Exception as e:  # noqa: BLE001 - this row's own error
                    self._fail(row, e)
            return
        self.steps += 1
        if self.on_batch is not None:
            self.on_batch(self.network.spec.name, len(rows), len(rows))
        for i, (row, (lo, hi, _)) in enumerate(zip(rows, windows, strict=True)):
            if row.closed:
                continue
            mine = {k: slice_axis(v[i], None if axis is None else axis - 1, 0, hi - lo) for k, v in out.items()
                    for axis in (self._out_axes.get(k),)}
            try:
                done = row.advance(mine, lo)
            except Exception as e:  # noqa: BLE001 - the recurrence's own fault ends its stream only
                self._fail(row, e)
                continue
            if done:
                row.chunks.put(END)
                self.remove(row)

    def _fail(self, row: Recurrence, error: BaseException) -> None:
        self.remove(row)
        row.chunks.put(error)

