"""Fixed-shape execution: every network call padded to a compiled size, split when longer, cropped back.

Accelerators that compile ahead (AWS Inferentia, TensorRT engines with fixed profiles, the ``cpu-static``
profile's one-ONNX-per-bucket) run a network only at the sizes of its ``buckets``.  This module is the one
place that adapts calls to them, below every component (melstream.runners.base.Network calls it), so the
stack JSON and the blocks are the same in every profile:

- a call of size ``n`` (the variable axis: every ``-1`` of the network's tensors, one length) runs padded
  with zeros to the smallest bucket ``B >= n``, with the network's length input saying ``n``; its outputs
  are cropped back to ``n``.  The masked networks give the padded call exactly the unpadded values (each
  architecture's masking rule: melstream/nets.py, the addons' model cards);
- a call longer than the largest bucket runs in windows: frames (or tokens) ``[a, b)`` from the window
  ``[a - c, b + c)`` (clipped), ``c`` the network's declared context (``context_tokens`` or
  ``context_frames``: its receptive half-width), keeping each window's middle, as the Decoder and the
  segmented encoders already do; a network that declares no context cannot be split and is refused with
  an error naming it (the attention decoder windows its memory itself, following the attention);
- data-dependent lengths (the Upsampler's frames) never reach a network: they stay in the blocks.

Shapes: every input and output has a leading batch axis of 1 here (the handles' contract); the variable axis
of a tensor is where its spec has ``-1``, counted after the batch.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from melstream.errors import AddonError, SynthesisError
from melstream_client.spec import CONTEXT_OPTIONS

if TYPE_CHECKING:
    from melstream_client.spec import NetworkSpec, TensorSpec

Call = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def variable_axis(t: TensorSpec) -> int | None:
    """The axis (batch counted) of ``t``'s variable size, or None if its shape is fixed."""
    return t.shape.index(-1) + 1 if -1 in t.shape else None


def declared_context(spec: NetworkSpec) -> int | None:
    """The network's declared receptive half-width on its variable axis, if it declares one."""
    for key in CONTEXT_OPTIONS:
        value = spec.options.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def check_fixed(spec: NetworkSpec) -> None:
    """Refuse, naming the network, what fixed shapes cannot run exactly: padding a network with no length
    input (its padded values would change the real ones), or a tensor with two variable axes."""
    if not spec.buckets:
        return
    if spec.length is None:
        raise AddonError(f"network {spec.name!r} has buckets but no length input (length_input): padding its inputs "
                         "to a bucket would change its outputs, so it cannot run at fixed shapes")
    for t in (*spec.inputs, *spec.outputs):
        if t.shape.count(-1) > 1:
            raise AddonError(f"network {spec.name!r}: {t.name} has {t.shape.count(-1)} variable axes; fixed shapes pad one")


def size_of(spec: NetworkSpec, inputs: Mapping[str, np.ndarray]) -> int:
    """The call's size on the variable axis (every variable input must agree)."""
    sizes = {t.name: inputs[t.name].shape[axis] for t in spec.inputs if (axis := variable_axis(t)) is not None}
    if len(set(sizes.values())) != 1:
        raise SynthesisError(f"network {spec.name!r}: its variable axis must have one size, the inputs have {sizes}")
    return next(iter(sizes.values()))


def bucket_for(buckets: tuple[int, ...], n: int) -> int | None:
    """The smallest bucket holding ``n``, or None if ``n`` exceeds the largest."""
    i = bisect.bisect_left(buckets, n)
    return buckets[i] if i < len(buckets) else None


def pad_axis(x: np.ndarray, axis: int | None, size: int) -> np.ndarray:
    """``x`` zero-padded to ``size`` along ``axis`` (as it is when ``axis`` is None or already that size)."""
    if axis is None or x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return np.pad(x, widths)


def slice_axis(x: np.ndarray, axis: int | None, lo: int, hi: int) -> np.ndarray:
    """``x[lo:hi]`` along ``axis`` (all of ``x`` when ``axis`` is None)."""
    if axis is None:
        return x
    index = [slice(None)] * x.ndim
    index[axis] = slice(lo, hi)
    return x[tuple(index)]


def fixed_shapes(spec: NetworkSpec, call: Call) -> Call:
    """``call`` (which runs only at ``spec.buckets`` sizes) as a call of any size: padded, split and cropped.

    The returned call takes the network's data inputs and, optionally, its length input (a caller that passes
    a window of a longer sequence says where that sequence ends; default: the call's own size)."""
    check_fixed(spec)
    assert spec.length is not None
    length_name = spec.length.name
    buckets = spec.buckets
    context = declared_context(spec)
    in_axes = {t.name: variable_axis(t) for t in spec.inputs}
    out_axes = {t.name: variable_axis(t) for t in spec.outputs}

    def padded(inputs: Mapping[str, np.ndarray], n: int, length: np.ndarray) -> dict[str, np.ndarray]:
        bucket = bucket_for(buckets, n)
        assert bucket is not None
        feed = {k: np.ascontiguousarray(pad_axis(v, in_axes[k], bucket)) for k, v in inputs.items()}
        feed[length_name] = length
        out = call(feed)
        return {k: slice_axis(v, out_axes[k], 0, n) for k, v in out.items()}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = {k: v for k, v in inputs.items() if k != length_name}
        n = size_of(spec, data)
        if n <= buckets[-1]:
            given = inputs.get(length_name)
            return padded(data, n, given if given is not None else np.full((1, 1), n, np.int64))
        if length_name in inputs:
            raise SynthesisError(f"network {spec.name!r}: a window of {n} exceeds its largest compiled size "
                                 f"{buckets[-1]}")
        if context is None or any(a is None for a in out_axes.values()):
            raise SynthesisError(f"network {spec.name!r} is compiled for at most {buckets[-1]} (buckets "
                                 f"{', '.join(map(str, buckets))}) and got {n}; it declares no context "
                                 f"({' or '.join(CONTEXT_OPTIONS)}) to split a longer input exactly")
        step = buckets[-1] - 2 * context  # > 0: validated at load (every bucket exceeds twice the context)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in out_axes}
        for a in range(0, n, step):
            b = min(a + step, n)
            lo, hi = max(a - context, 0), min(b + context, n)
            window = {k: slice_axis(v, in_axes[k], lo, hi) for k, v in data.items()}
            out = padded(window, hi - lo, np.full((1, 1), hi - lo, np.int64))
            for k, v in out.items():
                parts[k].append(slice_axis(v, out_axes[k], a - lo, b - lo))
        return {k: np.concatenate(v, axis=out_axes[k]) for k, v in parts.items()}

    return run


def with_length(spec: NetworkSpec, call: Call) -> Call:
    """``call`` of a network with a length input, at any shape: the length input defaults to the call's size."""
    if spec.length is None:
        return call
    length_name = spec.length.name

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if length_name not in inputs:
            inputs = {**inputs, length_name: np.full((1, 1), size_of(spec, inputs), np.int64)}
        return call(inputs)

    return run
