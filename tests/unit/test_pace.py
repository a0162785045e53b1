"""PACE means the same on every voice, out-of-range PACE is refused in-process as on the wire, and a request
that makes no audio is an error, not an empty stream (issue 9: every input refused or honoured).

On the synthetic voices (tests/synthetic.py): ``tinytaco`` has tacovoice's stack (AttentionDecoder with an
encoder), ``tinyfast`` fastvoice's."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from melstream.addon import Addon
from melstream.blocks import StreamableBlock, StreamablePipeline, Tensors
from melstream.components.stretch import Stretcher, TimeStretch, positions, stretch, stretched_length
from melstream.errors import InputError, StackError
from melstream.text import CharFrontend
from melstream_client import wire

TEXT = "Attention models generate frame by frame."
PACES = [0.25, 0.5, 0.8, 1.3, 2.0, 3.0, 4.0]


def reference_stretch(x: np.ndarray, pace: float) -> np.ndarray:
    """Stretching by 1 / pace written independently: np.interp along time, per channel, at the frame centres."""
    t_out = stretched_length(len(x), pace)
    where = np.clip((np.arange(t_out) + 0.5) * pace - 0.5, 0, len(x) - 1)
    flat = x.reshape(len(x), -1).astype(np.float64)
    cols = [np.interp(where, np.arange(len(x)), flat[:, c]) for c in range(flat.shape[1])]
    return np.stack(cols, axis=1).reshape((t_out, *x.shape[1:])) if cols else np.zeros((t_out, *x.shape[1:]))


# --- the attention voice honours PACE -------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_frames(taco_pipeline: StreamablePipeline) -> np.ndarray:
    return taco_pipeline.synthesize(TEXT)


def test_pace_1_or_absent_is_exactly_the_attentions_own_frames(taco_pipeline: StreamablePipeline, own_frames: np.ndarray) -> None:
    assert len(own_frames) > 50
    np.testing.assert_array_equal(taco_pipeline.synthesize(TEXT, pace=1.0), own_frames)
    np.testing.assert_array_equal(taco_pipeline.synthesize(TEXT, pace=1.0, chunk_frames=7), own_frames)


@pytest.mark.parametrize("pace, factor", [(2.0, 0.5), (0.5, 2.0), (4.0, 0.25), (0.25, 4.0)])
def test_pace_scales_the_frame_count(taco_pipeline: StreamablePipeline, own_frames: np.ndarray, pace: float, factor: float) -> None:
    frames = len(taco_pipeline.synthesize(TEXT, pace=pace))
    assert abs(frames - len(own_frames) * factor) <= 1, (frames, len(own_frames))


@pytest.mark.parametrize("pace", PACES)
def test_paced_frames_are_the_own_frames_stretched(taco_pipeline: StreamablePipeline, own_frames: np.ndarray, pace: float) -> None:
    paced = taco_pipeline.synthesize(TEXT, pace=pace)
    assert len(paced) == math.floor(len(own_frames) / pace + 0.5)
    np.testing.assert_allclose(paced, reference_stretch(own_frames, pace), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 32])
@pytest.mark.parametrize("pace", [0.5, 1.3, 2.0, 4.0])
def test_paced_streams_equal_the_whole_utterance(taco_pipeline: StreamablePipeline, pace: float, chunk: int) -> None:
    whole = taco_pipeline.synthesize(TEXT, pace=pace, chunk_frames=0)
    chunks = list(taco_pipeline.stream(TEXT, pace=pace, chunk_frames=chunk))
    assert all(len(c) == chunk for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    # the voice's own schedule (8 frames) too
    np.testing.assert_array_equal(np.concatenate(list(taco_pipeline.stream(TEXT, pace=pace))), whole)


def test_alignment_is_stretched_with_the_frames(taco_pipeline: StreamablePipeline) -> None:
    block = taco_pipeline.streamable_block
    own = list(block.generate(taco_pipeline.inputs_for(TEXT)))
    paced = list(block.generate(taco_pipeline.inputs_for(TEXT, pace=2.0, chunk_frames=5)))
    assert all(set(c) == {"mel", "alignment"} and len(c["mel"]) == len(c["alignment"]) for c in paced)
    align = np.concatenate([c["alignment"] for c in paced])
    np.testing.assert_allclose(align, reference_stretch(np.concatenate([c["alignment"] for c in own]), 2.0), atol=1e-6)
    assert (np.diff(align.argmax(axis=1)) >= 0).all()  # still monotonic


def test_faster_pace_still_streams_early(taco_pipeline: StreamablePipeline) -> None:
    """The stretch lets a chunk go as soon as its frames are exact: at PACE 2 the first 8-frame chunk needs
    about 17 of the attention's frames, not the whole utterance."""
    block = taco_pipeline.streamable_block
    pulled = 0
    inner = block._frames  # type: ignore[attr-defined]

    def counting(context: Mapping[str, np.ndarray], step: int) -> Iterator[Tensors]:
        nonlocal pulled
        for chunk in inner(context, step):
            pulled += len(chunk["mel"])
            yield chunk

    block._frames = counting  # type: ignore[attr-defined]
    try:
        it = taco_pipeline.stream(TEXT, pace=2.0)
        assert len(next(it)) == 8
        assert pulled <= 18
        it.close()
    finally:
        del block._frames  # type: ignore[attr-defined]


# --- the stretch itself -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pace", PACES)
@pytest.mark.parametrize("total", [1, 2, 3, 10, 257])
def test_stretch_is_exact_whatever_the_input_chunks(pace: float, total: int) -> None:
    rng = np.random.default_rng(total)
    mel = rng.standard_normal((total, 4)).astype(np.float32)
    extra = rng.standard_normal((total, 3)).astype(np.float32)
    whole = list(stretch(iter([{"mel": mel, "extra": extra}]), pace, 1 << 40))
    assert len(whole) == (1 if stretched_length(total, pace) else 0)
    expected = whole[0] if whole else {"mel": mel[:0], "extra": extra[:0]}
    assert len(expected["mel"]) == stretched_length(total, pace)
    np.testing.assert_allclose(expected["mel"], reference_stretch(mel, pace), atol=1e-5)
    cuts = np.cumsum(rng.integers(1, 6, total))
    cuts = [0, *cuts[cuts < total].tolist(), total]
    for step in (1, 3, 1 << 40):
        upstream = iter([{"mel": mel[a:b], "extra": extra[a:b], "audio": np.zeros(7)} for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
        chunks = list(stretch(upstream, pace, step))
        assert all(set(c) == {"mel", "extra"} for c in chunks)  # "audio" is not per frame: dropped
        assert all(len(c["mel"]) == step for c in chunks[:-1])
        for key in ("mel", "extra"):
            got = np.concatenate([c[key] for c in chunks]) if chunks else expected[key][:0]
            np.testing.assert_array_equal(got, expected[key])


def test_stretcher_keeps_little_history() -> None:
    stretcher = Stretcher(0.5)
    for i in range(1000):
        stretcher.push({"mel": np.full((1, 2), i, np.float32)}, "mel")
        assert len(stretcher.buf["mel"]) <= 3
    stretcher = Stretcher(4.0)
    for i in range(1000):
        stretcher.push({"mel": np.full((1, 2), i, np.float32)}, "mel")
        assert len(stretcher.buf["mel"]) <= 6


def test_positions_are_frame_centres() -> None:
    np.testing.assert_allclose(positions(0, 4, 2.0), [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(positions(0, 4, 0.5), [0.0, 0.25, 0.75, 1.25])
    assert [stretched_length(n, 2.0) for n in (0, 1, 2, 3, 253)] == [0, 1, 1, 2, 127]


def test_time_stretch_block_in_a_stack(taco_addon: Addon) -> None:
    """TimeStretch is a registered block for voices whose frames ignore pace: it keeps per-frame tensors
    (here the alignment of an AttentionDecoder) and refuses to follow a vocoder."""
    from melstream.components import get_component

    assert get_component("TimeStretch") is TimeStretch
    stack = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
              "streamable_block": {"type": "StreamableStack", "stack": [
                  {"type": "AttentionDecoder", "chunk_frames": 8}, {"type": "TimeStretch"}]}}]
    pipeline = taco_addon.build(stack=stack)
    assert set(pipeline.chunk_shapes) == {"mel", "alignment"}
    vocoded = [{**stack[0], "streamable_block": {"type": "StreamableStack", "stack": [
        {"type": "AttentionDecoder"}, {"type": "GriffinLim", "iterations": 1}, {"type": "TimeStretch"}]}}]
    with pytest.raises(StackError, match=r"TimeStretch must come before the vocoder"):
        taco_addon.build(stack=vocoded)
    block = TimeStretch(None, chunk_frames=4)
    mel = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = list(block.generate({"pace": np.float32(2.0)}, iter([{"mel": mel[:3]}, {"mel": mel[3:]}])))
    assert [len(c["mel"]) for c in out] == [4, 1]
    np.testing.assert_allclose(np.concatenate([c["mel"] for c in out]), reference_stretch(mel, 2.0))
    same = list(block.generate({}, iter([{"mel": mel}])))  # no pace: unchanged
    np.testing.assert_array_equal(same[0]["mel"], mel)


# --- out-of-range PACE is refused in-process too ------------------------------------------------------------

@pytest.mark.parametrize("pace", [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 0.2, 4.5, 1e9])
def test_out_of_range_pace_is_refused(fast_pipeline: StreamablePipeline, taco_pipeline: StreamablePipeline, pace: float) -> None:
    low, high = wire.PACE_RANGE
    for pipeline in (fast_pipeline, taco_pipeline):
        for call in (pipeline.inputs_for, pipeline.stream, pipeline.synthesize):
            with pytest.raises(InputError, match=rf"^input PACE must be a finite number from {low} to {high} .*got {pace}$"):
                list(call(TEXT, pace=pace))


@pytest.mark.parametrize("pace", wire.PACE_RANGE)
def test_pace_range_ends_are_accepted(fast_pipeline: StreamablePipeline, taco_pipeline: StreamablePipeline, pace: float) -> None:
    for pipeline in (fast_pipeline, taco_pipeline):
        assert len(pipeline.synthesize("Hello there.", pace=pace)) > 0


@pytest.mark.parametrize("chunk_frames", [-1, wire.CHUNK_FRAMES_RANGE[1] + 1])
def test_out_of_range_chunk_frames_is_refused(fast_pipeline: StreamablePipeline, chunk_frames: int) -> None:
    with pytest.raises(InputError, match=r"^input CHUNK_FRAMES must be from 0 to 100000 frames"):
        list(fast_pipeline.stream(TEXT, chunk_frames=chunk_frames))


# --- no audio is an error, not an empty stream ----------------------------------------------------------------

def test_a_request_that_makes_no_frames_is_an_input_error(fast_addon: Addon) -> None:
    """Every token spoken in 0 frames (here: the Upsampler allows none per token) ends the stream with an
    InputError naming TEXT (and PACE, when given), which a voice model sends as INVALID_ARG."""
    stack = [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"},
              "streamable_block": {"type": "Upsampler", "max_frames_per_token": 0}}, {"type": "Decoder"}]
    pipeline = fast_addon.build(stack=stack)
    with pytest.raises(InputError, match=r"^input TEXT makes no audio: this voice speaks 'Hi\.' in 0 frames \(a longer text"):
        list(pipeline.stream("Hi."))
    with pytest.raises(InputError, match=r"^input TEXT makes no audio at PACE 4\.0: .* \(a lower PACE or a longer text would"):
        pipeline.synthesize("Hi.", pace=4.0)
    with pytest.raises(InputError, match="makes no audio"):
        list(pipeline.stream_outputs(b"Hi.", chunk_frames=0))


class Silent(StreamableBlock):
    """Makes empty chunks only."""

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        yield {"mel": np.zeros((0, 80), np.float32)}
        yield {"mel": np.zeros((0, 80), np.float32)}


class NoSequence:
    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        return {}


def test_empty_chunks_alone_are_no_audio_and_frames_are() -> None:
    root = StreamablePipeline(None, sequence_block=NoSequence(), streamable_block=Silent())  # type: ignore[arg-type]
    root.frontend = CharFrontend()
    it = root.stream("Nothing comes out.")
    with pytest.raises(InputError, match="input TEXT makes no audio: this voice speaks 'Nothing comes out.' in 0 frames"):
        next(it)


def test_frames_from_the_shipped_stacks_raise_nothing(fast_pipeline: StreamablePipeline, taco_pipeline: StreamablePipeline) -> None:
    for pipeline in (fast_pipeline, taco_pipeline):
        assert len(pipeline.synthesize("a", pace=4.0)) > 0


def test_a_voice_model_sends_no_audio_as_invalid_arg(fast_addon: Addon) -> None:
    """Through the voice model (Triton's stand-ins of tests/unit/test_voice_model.py): INVALID_ARG with the final
    flag, no chunk, and the stream counted as an error."""
    from tests.unit.test_voice_model import request, run, voice

    stack = [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"},
              "streamable_block": {"type": "Upsampler", "max_frames_per_token": 0}}, {"type": "Decoder"}]
    model, _ = voice(fast_addon.build(stack=stack))
    sender = run(model, request(b"Hi.", pace=2.0))
    assert sender.kinds() == ["error+final"]
    ((code, message),) = sender.errors()
    assert code == "INVALID_ARG" and message.startswith("[INVALID_ARG] input TEXT makes no audio at PACE 2.0: "), message
    model.finalize()
