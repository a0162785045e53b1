"""The runner contract: ``runner.bind(addon, spec)`` gives a :class:`Network` handle.

A handle is called with a mapping of input tensors (each with its leading batch dimension of 1)
and returns a dict of the network's outputs.  Handles check the inputs against the addon's
tensor specs, so a wrong dtype or rank is reported with the network's name whatever the runner.

The handle is also the one seam where the profile's shapes are met: it fills a network's length input
(blocks never see it) and, for a runner with ``fixed_shapes``, pads, splits and crops every call to the
network's buckets (melstream.runners.fixed), so blocks and stacks are the same in every profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from melstream.errors import MelstreamError, SynthesisError
from melstream.runners.batching import BatchPolicy, batched
from melstream.runners.fixed import fixed_shapes, with_length
from melstream_client.wire import network_model_name as network_model_name  # the wire's, re-exported: existing imports work
from melstream_client.wire import servable_voices as servable_voices

if TYPE_CHECKING:
    from melstream_client.spec import AddonSpec, NetworkSpec

Call = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Network:
    """A bound network: ``handle(inputs) -> outputs`` with checked names, dtypes and ranks."""

    def __init__(self, spec: NetworkSpec, call: Call, *, where: str, fixed: bool = False, direct: Call | None = None,
                 lockstep_rows: int = 0, on_batch: Callable[[str, int, int], None] | None = None,
                 on_busy: Callable[[float], None] | None = None) -> None:
        self.spec = spec
        self.where = where
        #: the largest size the variable axis runs at in one call (None: any), for blocks that window themselves
        self.max_size: int | None = spec.buckets[-1] if fixed and spec.buckets else None
        adapt = fixed_shapes if self.max_size is not None else with_length
        self._call = adapt(spec, call)
        # a batch built by its caller (run_rows) skips the cross-stream batcher: it already holds every stream
        self._direct = adapt(spec, direct) if direct is not None else self._call
        #: rows one call of a step network may carry when a block steps its streams together
        #: (melstream.runners.lockstep); 0: every stream steps alone
        self.lockstep_rows = lockstep_rows
        #: hears ``(network, calls, rows)`` of every batched run (the voice's metrics)
        self.on_batch = on_batch
        #: hears the wall seconds of each lockstep step (the voice's capacity: melstream.serving.capacity)
        self.on_busy = on_busy

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(self._call, inputs, rows=1)

    def run_rows(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of a batch its caller built (every input ``[rows, ...]``, the length input ``[rows, 1]``),
        straight to the runner: :class:`melstream.runners.lockstep.Lockstep`'s steps."""
        rows = len(np.asarray(inputs[self.spec.inputs[0].name])) if self.spec.inputs else 1
        return self._run(self._direct, inputs, rows=rows)

    def _run(self, call: Call, inputs: Mapping[str, np.ndarray], *, rows: int) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for t in self.spec.inputs:
            if t.name not in inputs:
                raise SynthesisError(f"network {self.spec.name!r}: missing input {t.name!r}")
            x = np.asarray(inputs[t.name])
            if x.dtype != np.dtype(t.dtype):
                raise SynthesisError(f"network {self.spec.name!r}: input {t.name!r} is {x.dtype}, expected {t.dtype}")
            if x.ndim != len(t.shape) + 1 or len(x) != rows:
                raise SynthesisError(f"network {self.spec.name!r}: input {t.name!r} has shape {x.shape}, "
                                     f"expected [{rows}, {', '.join(map(str, t.shape))}]")
            feed[t.name] = np.ascontiguousarray(x)
        length = self.spec.length
        if length is not None and length.name in inputs:  # a block running a window says where its sequence ends
            x = np.asarray(inputs[length.name])
            if x.dtype != np.int64 or x.shape != (rows, 1):
                raise SynthesisError(f"network {self.spec.name!r}: length input {length.name!r} must be int64 of shape "
                                     f"[{rows}, 1], got {x.dtype} {x.shape}")
            feed[length.name] = x
        try:
            out = call(feed)
        except MelstreamError:
            raise
        except Exception as e:
            raise SynthesisError(f"network {self.spec.name!r} on {self.where} failed: {e}") from e
        return out

    def __repr__(self) -> str:
        return f"Network({self.spec.name!r} on {self.where})"


class Runner:
    """Base class: subclasses implement :meth:`call_for`; :meth:`bind` wraps it in a checked handle.

    ``fixed_shapes``: the networks run only at their buckets' sizes (the handle pads, splits and crops).
    ``batching``: concurrent calls to one network (from different streams' threads) run as one padded batch
    (melstream.runners.batching), for networks that batch (``max_batch_size`` > 0); None: each call alone."""

    name = "runner"
    fixed_shapes = False
    batching: BatchPolicy | None = None
    #: rows a lockstep step may carry (melstream.runners.lockstep); 0: recurrent blocks step each stream alone
    lockstep_rows = 0
    #: hears ``(network, calls, rows)`` of every run: a lockstep step, a cross-stream batch, or a call alone (the
    #: voice's metrics)
    on_batch: Callable[[str, int, int], None] | None = None
    #: hears the wall seconds of each lockstep step (melstream.runners.lockstep) of a network it binds
    on_busy: Callable[[float], None] | None = None

    def bind(self, addon: AddonSpec, spec: NetworkSpec) -> Network:
        direct = call = self.call_for(addon, spec)
        if spec.max_batch_size > 0:
            call = batched(spec, call, self.batching)
        if call is direct and self.on_batch is not None:  # no batcher to report its runs: each call is one
            call = counted(spec.name, call, self.on_batch)
        return Network(spec, call, where=self.name, fixed=self.fixed_shapes, direct=direct,
                       lockstep_rows=self.rows_for(spec), on_batch=self.on_batch, on_busy=self.on_busy)

    def rows_for(self, spec: NetworkSpec) -> int:
        """Rows one lockstep call of ``spec`` may carry here (0 for a network that does not batch)."""
        return self.lockstep_rows if spec.max_batch_size > 0 else 0

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        raise NotImplementedError


def counted(name: str, call: Call, on_batch: Callable[[str, int, int], None]) -> Call:
    """``call``, reporting each run to ``on_batch`` as one call of one row."""

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = call(inputs)
        on_batch(name, 1, 1)
        return out

    return run


class UnboundRunner(Runner):
    """Handles that refuse to run: used to validate a stack without loading any network."""

    name = "unbound"

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise SynthesisError(f"network {spec.name!r} is not bound to a runner (validation-only build)")

        return call
