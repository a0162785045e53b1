"""melstream.runners.fixed: pad to a bucket, split past the largest with context, crop (issue 10).

The network here is numpy: a masked moving sum of half-width ``C`` (what a convolution stack computes),
which refuses any size that is not one of its buckets, as a compiled model does.  Every answer is compared
with the same sum computed on the unpadded input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from melstream.errors import AddonError, SynthesisError
from melstream.runners.base import Network
from melstream.runners.fixed import bucket_for, fixed_shapes, with_length
from melstream_client.spec import NetworkSpec, TensorSpec

C = 3
BUCKETS = (8, 16)
LENGTH = TensorSpec("length", "int64", (1,))


def spec(*, context: int | None = C, buckets: tuple[int, ...] = BUCKETS, length: TensorSpec | None = LENGTH,
         extra_output: bool = False) -> NetworkSpec:
    outputs = (TensorSpec("y", "float32", (-1, 2)),) + ((TensorSpec("total", "float32", (1,)),) if extra_output else ())
    return NetworkSpec(name="conv", file="conv.onnx", role="decoder",
                       inputs=(TensorSpec("x", "float32", (-1, 2)), TensorSpec("gain", "float32", (1,))), outputs=outputs,
                       options={} if context is None else {"context_frames": context}, buckets=buckets, length=length)


def reference(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The moving sum over ``[t - C, t + C]`` with zeros past both ends, times gain: ``[1, T, 2]``."""
    padded = np.pad(x, ((0, 0), (C, C), (0, 0)))
    return gain[:, :, None] * sum(padded[:, k:k + x.shape[1]] for k in range(2 * C + 1))


class Compiled:
    """The network at fixed sizes: refuses any other; masks past the length, as the masked networks do."""

    def __init__(self, *, extra_output: bool = False) -> None:
        self.sizes: list[int] = []
        self.extra_output = extra_output

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, gain, length = feed["x"], feed["gain"], feed["length"]
        assert x.shape[1] in BUCKETS, f"compiled for {BUCKETS}, called at {x.shape[1]}"
        assert length.shape == (1, 1) and length.dtype == np.int64
        self.sizes.append(x.shape[1])
        mask = (np.arange(x.shape[1]) < length[0, 0])[None, :, None]
        y = reference(x * mask, gain) * mask
        out = {"y": y.astype(np.float32)}
        if self.extra_output:
            out["total"] = y.sum(axis=(1, 2))[:, None].astype(np.float32)
        return out


def inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + n)
    return {"x": rng.standard_normal((1, n, 2)).astype(np.float32), "gain": np.full((1, 1), 0.5, np.float32)}


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 31, 100, 1000])
def test_any_size_equals_the_unpadded_computation(n: int) -> None:
    net = Compiled()
    feed = inputs(n)
    out = fixed_shapes(spec(), net)(feed)
    assert out["y"].shape == (1, n, 2)
    np.testing.assert_allclose(out["y"], reference(feed["x"], feed["gain"]), atol=1e-5)
    assert net.sizes and all(s in BUCKETS for s in net.sizes)


@pytest.mark.parametrize(("n", "calls"), [(1, [8]), (8, [8]), (9, [16]), (16, [16]),
                                          # past 16: windows of 10 new frames with 3 of context on each side
                                          (17, [16, 16]), (22, [16, 16, 8]), (30, [16, 16, 16])])
def test_each_call_runs_in_the_smallest_bucket_that_holds_it(n: int, calls: list[int]) -> None:
    net = Compiled()
    fixed_shapes(spec(), net)(inputs(n))
    assert net.sizes == calls


def test_bucket_for() -> None:
    assert [bucket_for((8, 16), n) for n in (0, 1, 8, 9, 16, 17)] == [8, 8, 8, 16, 16, None]


def test_a_caller_may_say_where_a_longer_sequence_ends() -> None:
    """A window of a longer sequence (the attention decoder's) passes its own length, which reaches the network."""
    seen: list[int] = []

    def net(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(int(feed["length"][0, 0]))
        return {"y": feed["x"]}

    call = fixed_shapes(spec(), net)
    call({**inputs(5), "length": np.full((1, 1), 40, np.int64)})
    call(inputs(5))
    assert seen == [40, 5]
    with pytest.raises(SynthesisError, match=r"network 'conv': a window of 17 exceeds its largest compiled size 16"):
        call({**inputs(17), "length": np.full((1, 1), 40, np.int64)})


def test_a_network_without_context_cannot_be_split() -> None:
    call = fixed_shapes(spec(context=None), Compiled())
    np.testing.assert_allclose(call(inputs(16))["y"], reference(inputs(16)["x"], inputs(16)["gain"]), atol=1e-5)
    with pytest.raises(SynthesisError, match=r"network 'conv' is compiled for at most 16 \(buckets 8, 16\) and got 17; "
                                             r"it declares no context \(context_tokens or context_frames\)"):
        call(inputs(17))


def test_an_output_without_the_variable_axis_cannot_be_split() -> None:
    call = fixed_shapes(spec(extra_output=True), Compiled(extra_output=True))
    assert call(inputs(9))["total"].shape == (1, 1)
    with pytest.raises(SynthesisError, match="declares no context"):
        call(inputs(17))


def test_padding_needs_a_length_input() -> None:
    with pytest.raises(AddonError, match=r"network 'conv' has buckets but no length input .*cannot run at fixed shapes"):
        fixed_shapes(spec(length=None), Compiled())


def test_the_variable_axis_has_one_size() -> None:
    two = NetworkSpec(name="pair", file="p.onnx", role="other",
                      inputs=(TensorSpec("a", "float32", (-1,)), TensorSpec("b", "float32", (-1,))),
                      outputs=(TensorSpec("c", "float32", (-1,)),), buckets=(8,), length=LENGTH)
    call = fixed_shapes(two, lambda feed: {"c": feed["a"]})
    with pytest.raises(SynthesisError, match=r"network 'pair': its variable axis must have one size, the inputs have \{'a': 3, 'b': 4\}"):
        call({"a": np.zeros((1, 3), np.float32), "b": np.zeros((1, 4), np.float32)})


def test_dynamic_shapes_fill_the_length_with_the_calls_size() -> None:
    seen: list[Any] = []

    def net(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append((feed["x"].shape[1], feed["length"].tolist()))
        return {"y": feed["x"]}

    with_length(spec(), net)(inputs(23))
    assert seen == [(23, [[23]])]


def test_the_network_handle_is_the_seam() -> None:
    net = Compiled()
    fixed = Network(spec(), net, where="test", fixed=True)
    dynamic = Network(spec(), lambda feed: {"y": reference(feed["x"], feed["gain"]).astype(np.float32)}, where="test")
    assert (fixed.max_size, dynamic.max_size) == (16, None)
    feed = inputs(40)
    np.testing.assert_allclose(fixed(feed)["y"], dynamic(feed)["y"], atol=1e-5)
    assert set(net.sizes) <= set(BUCKETS)
    with pytest.raises(SynthesisError, match=r"length input 'length' must be int64 of shape \[1, 1\], got int32"):
        fixed({**feed, "length": np.ones((1, 1), np.int32)})


# --- the synthetic voices (the shipped architectures, toy sizes, small buckets) in-process: cpu-static vs cpu ---

def _frames(pipeline: Any, tokens: np.ndarray, **options: int) -> np.ndarray:
    context = {"tokens": tokens, **{k: np.asarray(v) for k, v in options.items()}}
    chunks = [c["mel"] for c in pipeline.generate(context) if len(c["mel"])]
    return np.concatenate(chunks) if chunks else np.zeros((0, pipeline.n_mels), np.float32)


@pytest.mark.parametrize("voice", ["fast_addon", "taco_addon"])
def test_synthetic_voices_at_fixed_shapes_equal_dynamic(voice: str, request: pytest.FixtureRequest) -> None:
    from melstream.runners.onnx import OnnxRuntimeRunner

    addon = request.getfixturevalue(voice)
    dynamic, static = addon.build(OnnxRuntimeRunner()), addon.build(OnnxRuntimeRunner(fixed_shapes=True))
    buckets = sorted({b for spec in addon.networks.values() for b in spec.buckets})
    # past the largest bucket: the convolutions split exactly; the attention runs a window of its memory, which
    # drops the alignment's far tails, and this untrained voice's soft attention spreads wide (the shipped
    # voice's window is compared over a 20,000-frame text in tests/integration/test_fixed_shapes.py)
    longest = 3 * buckets[-1] if voice == "fast_addon" else buckets[-1] + 1
    sizes = sorted({1} | {s for b in buckets for s in (b - 1, b, b + 1)} | {longest})
    rng = np.random.default_rng(7)
    for n in sizes:
        tokens = rng.integers(3, 30, n).astype(np.int64)
        a, b = _frames(dynamic, tokens), _frames(static, tokens)
        assert len(a) == len(b) > 0, (voice, n)
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=f"{voice}, {n} tokens")
    tokens = rng.integers(3, 30, 40).astype(np.int64)
    np.testing.assert_allclose(_frames(static, tokens, chunk_frames=0), _frames(dynamic, tokens, chunk_frames=0), atol=1e-4)


def test_frozen_synthetic_networks_have_no_variable_axis_but_the_batch(fast_addon: Any, taco_addon: Any) -> None:
    import onnx

    from melstream.runners.static_onnx import dynamic_tensors, freeze

    for addon in (fast_addon, taco_addon):
        for network, spec in addon.networks.items():
            model = onnx.load(str(addon.network_path(network)))
            assert dynamic_tensors(model), f"{network}: the exported network is dynamic"
            for bucket in spec.buckets:
                frozen = freeze(model, spec, bucket)
                assert dynamic_tensors(frozen) == {}, (network, bucket)
                dims = [d for vi in frozen.graph.input for d in vi.type.tensor_type.shape.dim]
                assert [d.dim_param for d in dims if not d.HasField("dim_value")] == ["batch"] * len(frozen.graph.input)
