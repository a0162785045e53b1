"""Declared block contracts: a mis-wired stack is refused when it is built, naming the block's JSON path and the tensor.

Addons here are JSON only (no network file is needed to validate a stack: it builds with handles that cannot run).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from melstream.addon import Addon, addon_from_data
from melstream.blocks import Contract, StreamableBlock
from melstream.errors import AddonError, StackError
from melstream.registry import register_component, unregister_component
from melstream.runners.base import UnboundRunner

D = 24  # encoding width of the JSON addons below
UNBOUND = UnboundRunner()  # these addons have no network files: build to check, never to run


def tensors(**shapes: list[int]) -> dict[str, Any]:
    return {name: {"dtype": "int64" if name == "tokens" else "float32", "shape": shape} for name, shape in shapes.items()}


def duration_addon(*, decoder_in: int = D, decoder_out: int = 80, n_mels: int = 80) -> dict[str, Any]:
    return {
        "name": "tiny", "version": "0",
        "audio": {"sample_rate": 22050, "hop_length": 256, "win_length": 1024, "n_fft": 1024, "n_mels": n_mels},
        "text": {"frontend": "english-chars"},
        "networks": {
            "text_encoder": {"file": "e.onnx", "role": "encoder", "context_tokens": 2,
                             "inputs": tensors(tokens=[-1]), "outputs": tensors(encodings=[-1, D])},
            "duration_predictor": {"file": "d.onnx", "role": "encoder", "context_tokens": 2,
                                   "inputs": tensors(tokens=[-1]), "outputs": tensors(durations=[-1])},
            "decoder": {"file": "m.onnx", "role": "decoder", "context_frames": 3,
                        "inputs": tensors(upsampled=[-1, decoder_in]), "outputs": tensors(mel=[-1, decoder_out])},
        },
        "stack": [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
                   "streamable_block": {"type": "StreamableStack", "stack": [{"type": "Upsampler"}, {"type": "Decoder"}]}}],
    }


def attention_addon(*, step_mels: int = 80, step_memory: int = D) -> dict[str, Any]:
    return {
        "name": "tinytaco", "version": "0",
        "audio": {"sample_rate": 22050, "hop_length": 256, "win_length": 1024, "n_fft": 1024, "n_mels": 80},
        "text": {"frontend": "english-chars"},
        "networks": {
            "encoder": {"file": "e.onnx", "role": "encoder", "context_tokens": 2,
                        "inputs": tensors(tokens=[-1]), "outputs": tensors(memory=[-1, D])},
            "decoder_step": {"file": "s.onnx", "role": "decoder",
                             "inputs": tensors(prev_mel=[step_mels], state=[8], alignment=[-1], memory=[-1, step_memory]),
                             "outputs": tensors(mel=[step_mels], stop_logit=[1], state_out=[8], alignment_out=[-1])},
        },
        "stack": [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}}],
    }


def with_stack(data: dict[str, Any], stack: list[Any]) -> dict[str, Any]:
    return {**copy.deepcopy(data), "stack": stack}


def pipeline(streamable: list[Any]) -> list[Any]:
    return [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
             "streamable_block": {"type": "StreamableStack", "stack": streamable}}]


def test_the_seed_stack_and_the_attention_stack_check_out() -> None:
    assert addon_from_data(duration_addon()).build(UNBOUND).chunk_shapes == {"mel": ("T", 80), "frame_tokens": ("T",)}
    assert addon_from_data(attention_addon()).build(UNBOUND).chunk_shapes["mel"] == ("T", 80)


def test_upsampler_then_vocoder_is_refused_at_load_naming_the_block_and_the_tensor() -> None:
    # Upsampler chunks carry "upsampled"; GriffinLim needs mel frames: this once built and failed at the first pull
    data = with_stack(duration_addon(), pipeline([{"type": "Upsampler"}, {"type": "GriffinLim"}]))
    with pytest.raises(StackError, match=r'tiny: stack\[0\]\.streamable_block\.stack\[1\]: GriffinLim needs upstream chunk '
                                         r'tensor "mel" \[T, n_mels\], but the chunks before it carry only: frame_tokens, upsampled'):
        addon_from_data(data, source="tiny")


def test_the_bare_two_block_stack_is_refused_at_its_first_block() -> None:
    # without encoders, the Upsampler has nothing to upsample: refused before GriffinLim is even looked at
    data = with_stack(duration_addon(), [{"type": "Upsampler"}, {"type": "GriffinLim"}])
    with pytest.raises(StackError, match=r'stack\[0\]: Upsampler needs context tensor "encodings" \[N, D\], but the context '
                                         r"holds only: chunk_frames, pace, tokens"):
        addon_from_data(data)


def test_a_stack_must_end_in_mel_frames() -> None:
    data = with_stack(duration_addon(), pipeline([{"type": "Upsampler"}]))
    with pytest.raises(StackError, match=r'stack\[0\]: StreamablePipeline needs its chunks to carry "mel" \[T, n_mels\], '
                                         r"but the stack's last block emits only: frame_tokens, upsampled"):
        addon_from_data(data)


def test_a_decoder_first_has_no_upstream() -> None:
    data = with_stack(duration_addon(), [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
                                          "streamable_block": {"type": "Decoder"}}])
    with pytest.raises(StackError, match=r'stack\[0\]\.streamable_block: Decoder needs upstream chunks with "upsampled"'):
        addon_from_data(data)


def test_decoder_input_width_must_match_the_encodings() -> None:
    with pytest.raises(StackError, match=r'stack\[0\]\.streamable_block\.stack\[1\]: Decoder needs upstream chunk tensor '
                                         rf'"upsampled" \[T, 32\], which is \[T, {D}\]: axis 1 is {D}, not 32'):
        addon_from_data(duration_addon(decoder_in=32))


@pytest.mark.parametrize(("decoder_out", "n_mels"), [(64, 80), (80, 64)])
def test_decoder_output_width_must_be_the_addons_n_mels(decoder_out: int, n_mels: int) -> None:
    with pytest.raises(StackError, match=rf'stack\[0\]\.streamable_block\.stack\[1\]: network "decoder" makes frames of '
                                         rf"{decoder_out} mel bins, but the addon's audio.n_mels is {n_mels}"):
        addon_from_data(duration_addon(decoder_out=decoder_out, n_mels=n_mels))


def test_attention_step_must_make_n_mels_and_read_the_encoders_memory() -> None:
    with pytest.raises(StackError, match=r"stack\[0\]: network \"decoder_step\" makes frames of 40 mel bins"):
        addon_from_data(attention_addon(step_mels=40))
    with pytest.raises(StackError, match=rf'stack\[0\]: AttentionDecoder needs context tensor "memory" \[N, 16\], which is '
                                         rf"\[\?, {D}\]: axis 1 is {D}, not 16"):
        addon_from_data(attention_addon(step_memory=16))


def test_attention_without_encoder_needs_memory_in_the_context() -> None:
    data = with_stack(attention_addon(), [{"type": "AttentionDecoder"}])
    with pytest.raises(StackError, match=r'stack\[0\]: AttentionDecoder needs context tensor "memory"'):
        addon_from_data(data)


def test_effects_and_vocoder_pass_the_frames_on() -> None:
    data = with_stack(duration_addon(), pipeline([{"type": "Upsampler"}, {"type": "Decoder"}, {"type": "Gain", "gain_db": 3.0},
                                                  {"type": "Timed", "block": {"type": "GriffinLim"}}]))
    root = addon_from_data(data).build(UNBOUND)
    assert root.chunk_shapes == {"mel": ("T", 80), "audio": ("S",)}
    assert root.produces_audio
    assert not addon_from_data(duration_addon()).build(UNBOUND).produces_audio


def test_segmented_pipeline_checks_its_streamable_block_against_its_encoders() -> None:
    good = with_stack(duration_addon(), [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"},
                                          "streamable_block": {"type": "Upsampler"}}, {"type": "Decoder"}])
    assert addon_from_data(good).build(UNBOUND).chunk_shapes == {"mel": ("T", 80), "frame_tokens": ("T",)}
    renamed = copy.deepcopy(good)
    renamed["stack"][0]["streamable_block"] = {"type": "Upsampler", "durations": "lengths"}
    with pytest.raises(StackError, match=r'stack\[0\]\.streamable_block: Upsampler needs context tensor "lengths" \[N\]'):
        addon_from_data(renamed)


def test_a_block_that_declares_no_contract_is_refused() -> None:
    @register_component("Undeclared")
    class Undeclared(StreamableBlock):
        def generate(self, context, upstream=None):  # type: ignore[no-untyped-def]
            yield from upstream

    try:
        data = with_stack(duration_addon(), pipeline([{"type": "Upsampler"}, {"type": "Decoder"}, {"type": "Undeclared"}]))
        with pytest.raises(StackError, match=r"stack\[0\]\.streamable_block\.stack\[2\]: Undeclared declares no contract"):
            addon_from_data(data)
    finally:
        unregister_component("Undeclared")


def test_a_plugin_contract_is_checked_like_a_builtin() -> None:
    @register_component("NeedsPitch")
    class NeedsPitch(StreamableBlock):
        contract = Contract(takes={"mel": ("T", "n_mels"), "pitch": ("T",)}, keeps_upstream=True)

    try:
        data = with_stack(duration_addon(), pipeline([{"type": "Upsampler"}, {"type": "Decoder"}, {"type": "NeedsPitch"}]))
        with pytest.raises(StackError, match=r'stack\[2\]: NeedsPitch needs upstream chunk tensor "pitch" \[T\], but the chunks '
                                             r"before it carry only: frame_tokens, mel"):
            addon_from_data(data)
    finally:
        unregister_component("NeedsPitch")


def test_load_error_names_the_file(tmp_path: Any) -> None:
    import json

    (tmp_path / "addon.json").write_text(json.dumps(with_stack(duration_addon(), pipeline([{"type": "Upsampler"}]))))
    from melstream.addon import load_addon

    with pytest.raises(StackError, match=rf"{tmp_path}/addon.json: stack\[0\]: StreamablePipeline needs"):
        load_addon(tmp_path, check_files=False)


def test_addon_is_built_from_its_spec() -> None:
    addon = addon_from_data(duration_addon())
    assert isinstance(addon, Addon) and addon.spec.name == "tiny" and addon.name == "tiny"
    assert list(addon.networks) == ["text_encoder", "duration_predictor", "decoder"]


def test_unknown_front_end_is_refused_at_load_not_at_parse() -> None:
    data = duration_addon()
    data["text"]["frontend"] = "klingon"
    with pytest.raises(AddonError, match=r"tiny: text.frontend: unknown front end 'klingon'; known: english-chars, espeak-phonemes"):
        addon_from_data(data, source="tiny")


def test_a_decoder_window_must_fit_its_largest_bucket() -> None:
    """The Decoder runs a chunk with its context on both sides: with max_chunk_frames 16 and context_frames 3,
    a window is 22 frames, so a network compiled for at most 21 cannot take it."""
    def decoder(buckets: list[int], max_chunk: int) -> dict[str, Any]:
        data = duration_addon()
        data["networks"]["decoder"]["buckets"] = buckets
        data["stack"][0]["streamable_block"]["stack"][1].update(chunk_frames=8, max_chunk_frames=max_chunk)
        return data

    addon_from_data(decoder([8, 22], 16)).build(UNBOUND)
    with pytest.raises(StackError, match=r'stack\[0\]\.streamable_block\.stack\[1\]: a chunk of 16 frames with its context \(3 '
                                         r'on each side\) is a window of 22 frames, but network "decoder" is compiled for at '
                                         r"most 21 \(its buckets: 8, 21\)"):
        addon_from_data(decoder([8, 21], 16))
