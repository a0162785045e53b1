"""Streaming never changes the answer, for every chunk size and the edge lengths.

On the synthetic voices (tests/synthetic.py): the shipped voices' architectures and stacks at toy sizes, so
that even 20 000+ frames, frame by frame, take about a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from melstream.addon import Addon, NetworkSpec, addon_from_data
from melstream.blocks import StreamablePipeline, StreamableStack
from melstream.components.attention import AttentionDecoder
from melstream.components.decoder import Decoder
from melstream.components.diagnostics import Timed
from melstream.components.segments import segment_bounds
from melstream.components.upsampler import Upsampler, frame_counts
from melstream.errors import InputError, StackError, SynthesisError, TextError
from melstream.runners.base import Call
from melstream.runners.onnx import OnnxRuntimeRunner

CHUNKS = [1, 7, 32, 1000]
TOL = 1e-4
SEED_STACK = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
               "streamable_block": {"type": "StreamableStack", "stack": [{"type": "Upsampler"}, {"type": "Decoder"}]}}]
WHOLE_MEMORY_STACK = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
                       "streamable_block": {"type": "AttentionDecoder", "chunk_frames": 8}}]
LONG_TEXT = " ".join(["This sentence is repeated to make a very long utterance of many words."] * 60)


@pytest.fixture(scope="module")
def seed_pipeline(fast_addon: Addon) -> StreamablePipeline:
    """The seed's stack as written: encoders once, then Upsampler -> Decoder."""
    return fast_addon.build(stack=SEED_STACK)


class CountingRunner(OnnxRuntimeRunner):
    """ONNX Runtime, counting calls per network (to prove laziness and cancellation)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def call_for(self, addon: Addon, spec: NetworkSpec) -> Call:
        inner = super().call_for(addon, spec)

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls[spec.name] = self.calls.get(spec.name, 0) + 1
            return inner(inputs)

        return call


def upsample_and_decode(pipeline: StreamablePipeline) -> tuple[Upsampler, Decoder]:
    stack = pipeline.streamable_block
    assert isinstance(stack, StreamableStack)
    up, dec = stack.stack
    assert isinstance(up, Upsampler) and isinstance(dec, Decoder)
    return up, dec


LONG_FRAMES = 20_011  # "very long": over 20 000 frames


def tokens_for(total: int) -> int:
    """Enough tokens for ``total`` frames without reaching the Upsampler's 100-frame cap per token."""
    return max(1, min(total, max(60, total // 40)))


def context_with_frames(total: int, *, dim: int, tokens: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Encodings and integer durations that add up to exactly ``total`` frames."""
    rng = np.random.default_rng(seed)
    # uneven token lengths (some zero), none over the Upsampler's 100-frame cap
    weights = rng.uniform(0.0, 2.0, tokens)
    cuts = np.round(np.cumsum(weights) / weights.sum() * total).astype(np.int64)
    durations = np.diff(np.concatenate([[0], cuts])).astype(np.float32)
    assert durations.sum() == total and durations.max(initial=0) <= 100
    return {"encodings": rng.standard_normal((tokens, dim)).astype(np.float32), "durations": durations}


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("frames_rel", ["0", "1", "chunk-1", "chunk", "chunk+1", "long"])
def test_streamed_frames_equal_whole_decode(seed_pipeline: StreamablePipeline, chunk: int, frames_rel: str) -> None:
    total = {"0": 0, "1": 1, "chunk-1": chunk - 1, "chunk": chunk, "chunk+1": chunk + 1, "long": LONG_FRAMES}[frames_rel]
    up, dec = upsample_and_decode(seed_pipeline)
    dim = dec.network.spec.inputs[0].shape[-1]
    ctx = context_with_frames(total, dim=dim, tokens=tokens_for(total))
    ctx["chunk_frames"] = np.asarray(chunk)
    upsampled = [c["upsampled"] for c in up.generate(ctx)]
    full = np.concatenate(upsampled) if upsampled else np.zeros((0, dim), np.float32)
    assert len(full) == total
    assert all(len(c) == chunk for c in upsampled[:-1])
    chunks = [c["mel"] for c in dec.generate(ctx, iter({"upsampled": u} for u in upsampled))]
    streamed = np.concatenate(chunks) if chunks else np.zeros((0, 80), np.float32)
    assert streamed.shape == (total, 80)
    assert all(len(c) == chunk for c in chunks[:-1]) and all(len(c) > 0 for c in chunks)
    if total:
        whole = dec.decode(full)
        assert float(np.abs(streamed - whole).max()) <= TOL


def test_uneven_upstream_chunks_still_exact(seed_pipeline: StreamablePipeline) -> None:
    """Upstream chunk sizes that do not match the decoder's (1, 2, 3, ... frames) change nothing."""
    _, dec = upsample_and_decode(seed_pipeline)
    full = np.random.default_rng(1).standard_normal((500, dec.network.spec.inputs[0].shape[-1])).astype(np.float32)
    bounds = np.cumsum([0] + [1 + i % 13 for i in range(100)])
    bounds = bounds[bounds < 500].tolist() + [500]
    upstream = ({"upsampled": full[a:b]} for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    streamed = np.concatenate([c["mel"] for c in dec.generate({"chunk_frames": np.asarray(7)}, upstream)])
    assert float(np.abs(streamed - dec.decode(full)).max()) <= TOL


def growing_schedule(total: int, first: int, cap: int) -> list[int]:
    """Chunk sizes the Decoder's max_chunk_frames promises: first, doubling, capped; the rest last."""
    sizes, step = [], first
    while sum(sizes) < total:
        sizes.append(min(step, total - sum(sizes)))
        step = min(2 * step, cap)
    return sizes


@pytest.mark.parametrize("total", [0, 1, 31, 32, 33, 95, 96, 97, LONG_FRAMES])
def test_growing_chunks_follow_the_schedule_and_stay_exact(fast_addon: Addon, total: int) -> None:
    stack = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "StreamableStack",
              "stack": [{"type": "Upsampler"}, {"type": "Decoder", "chunk_frames": 32, "max_chunk_frames": 64}]}}]
    up, dec = upsample_and_decode(fast_addon.build(stack=stack))
    dim = dec.network.spec.inputs[0].shape[-1]
    ctx = context_with_frames(total, dim=dim, tokens=tokens_for(total))
    full = np.concatenate([c["upsampled"] for c in up.generate(ctx)] or [np.zeros((0, dim), np.float32)])
    chunks = [c["mel"] for c in dec.generate(ctx, iter([{"upsampled": full}]))]
    assert [len(c) for c in chunks] == growing_schedule(total, 32, 64)  # 64: the largest window fits the decoder's buckets
    if total:
        assert float(np.abs(np.concatenate(chunks) - dec.decode(full)).max()) <= TOL
    # a request's own chunk size is kept fixed, and 0 still means the whole utterance at once
    fixed = [len(c["mel"]) for c in dec.generate({**ctx, "chunk_frames": np.asarray(16)}, iter([{"upsampled": full}]))]
    assert fixed == growing_schedule(total, 16, 16)
    whole = [len(c["mel"]) for c in dec.generate({**ctx, "chunk_frames": np.asarray(0)}, iter([{"upsampled": full}]))]
    assert whole == ([total] if total else [])


def test_growing_chunks_need_a_cap_above_the_first_chunk(fast_addon: Addon) -> None:
    stack = [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "Upsampler"}},
             {"type": "Decoder", "chunk_frames": 32, "max_chunk_frames": 16}]
    with pytest.raises(StackError, match=r"stack\[1\].max_chunk_frames: must be >= chunk_frames \(32\), got 16"):
        fast_addon.build(stack=stack)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("text", ["a", "Hi.", "The quick brown fox jumps over the lazy dog, 42 times!"])
def test_text_streams_equal_whole_utterance(fast_pipeline: StreamablePipeline, seed_pipeline: StreamablePipeline,
                                            chunk: int, text: str) -> None:
    # the reference: the seed's stack, whole text encoded at once, decoded in one call (chunk 0)
    whole = seed_pipeline.synthesize(text, chunk_frames=0)
    chunks = list(fast_pipeline.stream(text, chunk_frames=chunk))  # the shipped, segmented stack
    assert len(chunks) == -(-len(whole) // chunk)
    assert float(np.abs(np.concatenate(chunks) - whole).max()) <= TOL


@pytest.mark.parametrize("first, size", [(1, 1), (16, 96), (5, 7), (10_000, 10_000)])
def test_segmented_encoding_is_exact_on_very_long_text(fast_addon: Addon, seed_pipeline: StreamablePipeline,
                                                       first: int, size: int) -> None:
    whole = seed_pipeline.synthesize(LONG_TEXT, chunk_frames=0)
    assert len(whole) > LONG_FRAMES
    stack = [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "Upsampler"},
              "first_segment_tokens": first, "segment_tokens": size}, {"type": "Decoder"}]
    streamed = fast_addon.build(stack=stack).synthesize(LONG_TEXT, chunk_frames=32)
    assert streamed.shape == whole.shape
    assert float(np.abs(streamed - whole).max()) <= TOL


def test_segmented_encoding_needs_declared_context(fast_addon: Addon) -> None:
    import copy
    data = copy.deepcopy(fast_addon.raw)
    del data["networks"]["duration_predictor"]["context_tokens"]
    with pytest.raises(StackError, match=r'stack\[0\].sequence_block: network "duration_predictor" declares no "context_tokens"'):
        addon_from_data(data, path=fast_addon.path)


def test_segment_bounds() -> None:
    assert segment_bounds(0, 4, 8) == []
    assert segment_bounds(3, 4, 8) == [(0, 3)]
    assert segment_bounds(4, 4, 8) == [(0, 4)]
    assert segment_bounds(5, 4, 8) == [(0, 4), (4, 5)]
    assert segment_bounds(21, 4, 8) == [(0, 4), (4, 12), (12, 20), (20, 21)]


def test_empty_and_unspeakable_text_is_refused(fast_pipeline: StreamablePipeline) -> None:
    for text in ["", "   ", "?!", "\U0001F600"]:
        with pytest.raises(TextError, match="nothing to speak"):
            list(fast_pipeline.stream(text))
    with pytest.raises(TextError, match="limit is 10000"):
        list(fast_pipeline.stream("a" * 10001))


def test_streaming_is_pull_based(fast_addon: Addon) -> None:
    runner = CountingRunner()
    pipeline = fast_addon.build(runner)
    it = pipeline.stream("Nothing runs before the first pull. " * 10, chunk_frames=8)
    assert runner.calls == {}
    next(it)
    assert runner.calls == {"text_encoder": 1, "duration_predictor": 1, "decoder": 1}
    next(it)
    assert runner.calls["decoder"] == 2
    it.close()  # the consumer stops: no more work
    assert runner.calls["decoder"] == 2


def test_pace_changes_length(fast_pipeline: StreamablePipeline) -> None:
    normal = fast_pipeline.synthesize("Pace check, one two three.")
    fast = fast_pipeline.synthesize("Pace check, one two three.", pace=2.0)
    assert 0.35 * len(normal) < len(fast) < 0.65 * len(normal)
    with pytest.raises(InputError, match="input PACE must be a finite number from 0.25 to 4.0"):
        fast_pipeline.synthesize("x", pace=0.0)
    with pytest.raises(SynthesisError, match="pace must be a positive number"):  # a block given a bad pace directly
        frame_counts(np.ones(3), pace=0.0)


def test_frame_counts_rounding() -> None:
    np.testing.assert_array_equal(frame_counts(np.array([0.4, 0.5, 1.49, 2.5, -3, 1e9, np.nan])), [0, 1, 1, 3, 0, 100, 0])


# --- the attention voice ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["a", "Hello there.", LONG_TEXT[:2000]])
def test_attention_incremental_encoding_is_exact(taco_addon: Addon, taco_pipeline: StreamablePipeline, text: str) -> None:
    whole_memory = taco_addon.build(stack=WHOLE_MEMORY_STACK).synthesize(text)
    incremental = taco_pipeline.synthesize(text)
    assert incremental.shape == whole_memory.shape
    # the memory is the same up to float rounding (a window's convolution vs the whole text's); the
    # autoregression carries that rounding through hundreds of frames, so allow a little more than TOL
    assert float(np.abs(incremental - whole_memory).max()) <= 1e-2


def attention_block(pipeline: StreamablePipeline) -> AttentionDecoder:
    block = pipeline.streamable_block
    assert isinstance(block, AttentionDecoder)
    return block


@pytest.mark.parametrize("chunk", CHUNKS)
def test_attention_streams_equal_whole(taco_pipeline: StreamablePipeline, chunk: int) -> None:
    text = "Attention models generate frame by frame."
    whole = taco_pipeline.synthesize(text, chunk_frames=0)
    chunks = list(taco_pipeline.stream(text, chunk_frames=chunk))
    assert all(len(c) == chunk for c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize("text", ["Yes.", "Hello.", "A longer sentence, with commas; and 3 numbers: 1, 2, 3.",
                                  " ".join(["Many words in a long paragraph."] * 20)])
def test_attention_stops_on_its_own(taco_addon: Addon, text: str) -> None:
    pipeline = taco_addon.build()
    mel = pipeline.synthesize(text)
    block = attention_block(pipeline)
    assert block.guard_hits == 0
    n_tokens = len(pipeline.frontend.encode(text))
    assert n_tokens <= len(mel) < block.max_frames_per_token * n_tokens


def test_attention_alignment_is_monotonic(taco_pipeline: StreamablePipeline) -> None:
    block = attention_block(taco_pipeline)
    ctx = taco_pipeline.inputs_for("Monotonic attention never goes back.")
    align = np.concatenate([c["alignment"] for c in block.generate(ctx)])
    peaks = align.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    # it ends at the end: on the end symbol, or on the last phoneme when the stop token fires before the
    # closing pause ("[.]") and the end symbol
    assert peaks[-1] >= align.shape[1] - 3


def test_attention_guard_ends_runaway_generation(taco_addon: Addon) -> None:
    stack = [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}, "max_frames": 10, "chunk_frames": 4}]
    pipeline = taco_addon.build(stack=stack)
    mel = pipeline.synthesize("This needs far more than ten frames.")
    assert len(mel) == 10
    assert attention_block(pipeline).guard_hits == 1


# --- diagnostics and effects ----------------------------------------------------------------------

def test_timed_records_every_chunk_and_changes_nothing(fast_addon: Addon) -> None:
    stack = [{"type": "Timed", "label": "whole", "block": {
        "type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
        "streamable_block": {"type": "StreamableStack", "stack": [
            {"type": "Upsampler"}, {"type": "Timed", "label": "decoder", "block": {"type": "Decoder"}}]}}}]
    pipeline = fast_addon.build(stack=stack)
    text = "Timing does not change frames."
    chunks = list(pipeline.stream(text))
    np.testing.assert_array_equal(np.concatenate(chunks), fast_addon.build(stack=SEED_STACK).synthesize(text))
    outer = pipeline.streamable_block
    assert isinstance(outer, Timed)
    (record,) = outer.timings
    assert len(record.chunk_s) == len(chunks) and record.frames == sum(len(c) for c in chunks)
    assert record.first_chunk_s is not None and record.first_chunk_s >= record.chunk_s[0] > 0


def test_gain_tilt(fast_addon: Addon) -> None:
    stack = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
              "streamable_block": {"type": "StreamableStack", "stack": [
                  {"type": "Upsampler"}, {"type": "Decoder"}, {"type": "Gain", "tilt_db": 20.0}]}}]
    diff = fast_addon.build(stack=stack).synthesize("tilt") - fast_addon.build().synthesize("tilt")
    np.testing.assert_allclose(diff[:, 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(diff[:, -1], 20.0 * np.log(10) / 20, atol=1e-5)


def test_decoder_without_upstream_is_an_error(fast_addon: Addon) -> None:
    stack = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "Decoder"}}]
    with pytest.raises(StackError, match=r'stack\[0\].streamable_block: Decoder needs upstream chunks with "upsampled", but no block'):
        fast_addon.build(stack=stack)
