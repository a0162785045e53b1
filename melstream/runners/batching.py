"""Cross-stream batching at the runner seam: concurrent calls to one network run as one padded batch.

Each stream runs its blocks in its own thread and calls its network handles as always; a :class:`Batcher`
under the handles gathers the calls that arrive together (for at most ``max_wait_s``, and no longer than it
takes the streams it expects to arrive) and runs them as one call:

- inputs without a variable axis are stacked; inputs with one are zero-padded to the longest in the batch,
  each row's true size going in the network's length input (the masked networks give a padded row exactly
  its unpadded values: melstream/nets.py), and each row's outputs are cropped back to its own size;
- a network without a length input batches only calls of equal sizes (padding would change its values);
- if a batch fails, each of its calls is run alone, so one stream's bad input fails that stream only.

The first caller of a batch leads it: it waits for the others, runs the batch in its own thread and hands
each caller its rows; callers that arrive meanwhile form the next batch (ONNX Runtime and Triton calls release
the GIL, so two batches can run at once).  Shapes: every input has a leading batch axis (of 1 from a handle).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from melstream.runners.fixed import pad_axis, slice_axis, variable_axis

if TYPE_CHECKING:
    from melstream_client.spec import NetworkSpec

Call = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchPolicy:
    """How long a batch waits for more calls, and how many rows it holds at most.  ``expected`` (optional)
    tells how many callers could join (e.g. the voice's active streams): a batch that has them all runs at
    once, and a caller alone never waits.  ``on_batch`` (optional) hears ``(network, calls, rows)`` of every
    batch run (metrics)."""

    max_wait_s: float = 0.0005
    max_batch: int = 64
    expected: Callable[[], int] | None = None
    on_batch: Callable[[str, int, int], None] | None = None


class _Pending:
    __slots__ = ("inputs", "rows", "result", "error", "done", "wake")

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.inputs = inputs
        self.rows = len(next(iter(inputs.values())))
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()  # set when its rows are back, or when it is to lead the next batch


class Batcher:
    """``call`` (one network's, taking and returning batched tensors) shared by concurrent callers."""

    def __init__(self, spec: NetworkSpec, call: Call, policy: BatchPolicy) -> None:
        self.spec = spec
        self._call = call
        self.policy = policy
        self._in_axes = {t.name: variable_axis(t) for t in spec.inputs}
        self._out_axes = {t.name: variable_axis(t) for t in spec.outputs}
        self._length = spec.length.name if spec.length is not None else None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the gathering leader waits on it, arrivals notify it
        self._pending: list[_Pending] = []
        self._forming = False  # a leader is gathering the next batch

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        me = _Pending(inputs)
        with self._lock:
            self._pending.append(me)
            lead = not self._forming
            if lead:
                self._forming = True
            else:
                self._arrived.notify()
        if not lead:
            me.wake.wait()
            if me.done:
                return self._answer(me)
            # promoted by the previous leader: lead the next batch (_forming is still set, for us)
        with self._lock:
            batch = self._gather()
            if self._pending:  # the calls left over: the oldest leads the next batch while this one runs
                self._pending[0].wake.set()
            else:
                self._forming = False
        self._run(batch)
        for p in batch:
            if p is not me:
                p.wake.set()
        return self._answer(me)

    def _gather(self) -> list[_Pending]:
        """With the lock held: wait for the batch's callers (bounded), then take them off the queue."""
        policy = self.policy
        expected = policy.expected() if policy.expected is not None else policy.max_batch
        target = max(1, min(expected, policy.max_batch))
        deadline = time.monotonic() + policy.max_wait_s
        while self._rows() < target:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._arrived.wait(left)
        batch: list[_Pending] = []
        rows = 0
        for p in self._pending:
            if batch and rows + p.rows > policy.max_batch:
                break
            batch.append(p)
            rows += p.rows
        del self._pending[:len(batch)]
        return batch

    def _rows(self) -> int:
        return sum(p.rows for p in self._pending)

    @staticmethod
    def _answer(p: _Pending) -> dict[str, np.ndarray]:
        if p.error is not None:
            raise p.error
        assert p.result is not None
        return p.result

    def _run(self, batch: list[_Pending]) -> None:
        groups = [batch] if self._length is not None else self._equal_sizes(batch)
        for group in groups:
            try:
                self._run_together(group)
            except BaseException as e:  # noqa: BLE001 - isolate the caller at fault: each alone
                if len(group) == 1:
                    group[0].error = e
                else:
                    for p in group:
                        try:
                            self._run_together([p])
                        except BaseException as alone:  # noqa: BLE001 - this caller's own error
                            p.error = alone
            finally:
                for p in group:
                    p.done = True

    def _equal_sizes(self, batch: list[_Pending]) -> list[list[_Pending]]:
        groups: dict[tuple[int, ...], list[_Pending]] = {}
        for p in batch:
            key = tuple(p.inputs[k].shape[a] for k, a in self._in_axes.items() if a is not None)
            groups.setdefault(key, []).append(p)
        return list(groups.values())

    def _size(self, p: _Pending) -> int | None:
        for k, a in self._in_axes.items():
            if a is not None:
                return int(p.inputs[k].shape[a])
        return None

    def _run_together(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            group[0].result = self._call(group[0].inputs)
            self._record(1, group[0].rows)
            return
        sizes = [self._size(p) for p in group]
        top = max((s for s in sizes if s is not None), default=None)
        feed: dict[str, np.ndarray] = {}
        for name, axis in self._in_axes.items():
            parts = [p.inputs[name] for p in group]
            if axis is not None and top is not None:
                parts = [pad_axis(x, axis, top) for x in parts]
            feed[name] = np.concatenate(parts)
        if self._length is not None:
            feed[self._length] = np.concatenate([p.inputs[self._length] for p in group])
        out = self._call(feed)
        start = 0
        for p, size in zip(group, sizes, strict=True):
            rows = {k: v[start:start + p.rows] for k, v in out.items()}
            if size is not None:
                rows = {k: slice_axis(v, self._out_axes.get(k), 0, size) for k, v in rows.items()}
            p.result = rows
            start += p.rows
        self._record(len(group), start)

    def _record(self, calls: int, rows: int) -> None:
        if self.policy.on_batch is not None:
            self.policy.on_batch(self.spec.name, calls, rows)


def batched(spec: NetworkSpec, call: Call, policy: BatchPolicy | None) -> Call:
    """``call`` behind a :class:`Batcher` (or as it is, without a policy or for a network that cannot batch)."""
    if policy is None or policy.max_batch < 2:
        return call
    return Batcher(spec, call, policy)

