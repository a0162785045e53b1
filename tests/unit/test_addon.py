from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import melstream
from melstream.addon import Addon, load_addon
from melstream.errors import AddonError, StackError
from tests import synthetic

SEED_STACK = json.loads('''{"stack": [{"type": "StreamablePipeline",
            "sequence_block": {"type": "Encoders"},
            "streamable_block": {"type": "StreamableStack",
                                 "stack": [{"type": "Upsampler"}, {"type": "Decoder"}]}}]}''')["stack"]


@pytest.fixture
def addon_copy(tmp_path: Path, fast_addon: Addon) -> Path:
    """The (synthetic) duration voice with the seed's stack (the JSON paths below refer to its form)."""
    assert fast_addon.path is not None
    dst = tmp_path / fast_addon.name
    shutil.copytree(fast_addon.path, dst)
    return edit(dst, lambda d: d.update(stack=copy.deepcopy(SEED_STACK)))


def edit(addon_dir: Path, change: Any) -> Path:
    data = json.loads((addon_dir / "addon.json").read_text())
    change(data)
    (addon_dir / "addon.json").write_text(json.dumps(data))
    return addon_dir


def test_addons_load_with_their_networks(fast_addon: Addon, taco_addon: Addon) -> None:
    assert (fast_addon.name, taco_addon.name) == (synthetic.FAST, synthetic.TACO)
    for a in (fast_addon, taco_addon):
        assert (a.audio.sample_rate, a.audio.hop_length, a.audio.n_mels) == (22050, 256, 80)
        assert a.path is not None and all(a.network_path(n) == a.path / s.file and a.network_path(n).is_file()
                                          for n, s in a.networks.items())
    assert list(fast_addon.networks) == ["text_encoder", "duration_predictor", "decoder"]  # declaration order, kept


def test_seed_stack_builds_as_written(fast_addon: Addon) -> None:
    pipeline = fast_addon.build(stack=SEED_STACK)
    tree = pipeline.describe()
    assert tree.splitlines()[0].startswith("StreamablePipeline")
    assert "Upsampler" in tree and "Decoder" in tree and "text_encoder" in tree and "duration_predictor" in tree


def test_customized_encoders_change_no_frame(fast_addon: Addon) -> None:
    custom = json.loads(json.dumps(SEED_STACK).replace('"Encoders"', '"CustomizedEncoders"'))
    text = "Renaming Encoders to CustomizedEncoders changes no frame, 123 times."
    a = fast_addon.build(stack=SEED_STACK).synthesize(text)
    b = fast_addon.build(stack=custom).synthesize(text)
    assert "CustomizedEncoders" in fast_addon.build(stack=custom).describe()
    assert a.shape == b.shape and a.shape[0] > 0
    np.testing.assert_array_equal(a, b)


def test_network_blocks_in_a_container_equal_encoders(fast_addon: Addon) -> None:
    """Encoders is a SequenceBlockContainer of one Network block per encoder network: written out by hand,
    the same frames."""
    by_hand = json.loads(json.dumps(SEED_STACK).replace('{"type": "Encoders"}', json.dumps(
        {"type": "SequenceBlockContainer", "stack": [{"type": "Network", "network": "text_encoder"},
                                                     {"type": "Network", "network": "duration_predictor"}]})))
    text = "Two networks, named one by one."
    pipeline = fast_addon.build(stack=by_hand)
    assert "Network (SequenceBlock, network=duration_predictor)" in pipeline.describe()
    a = pipeline.synthesize(text)
    assert len(a) > 0
    np.testing.assert_array_equal(a, fast_addon.build(stack=SEED_STACK).synthesize(text))
    # without the duration predictor nothing makes the Upsampler's durations
    only_encodings = json.loads(json.dumps(by_hand).replace(', {"type": "Network", "network": "duration_predictor"}', ""))
    with pytest.raises(StackError, match="durations"):
        fast_addon.build(stack=only_encodings)


def test_nested_pipeline_where_a_streamable_block_is_expected(fast_addon: Addon) -> None:
    """A whole StreamablePipeline stands in for the Decoder's upstream (seed: nesting is fine)."""
    nested = [{"type": "StreamablePipeline", "sequence_block": {"type": "SequenceBlockContainer", "stack": []},
               "streamable_block": {"type": "StreamableStack", "stack": [
                   {"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
                    "streamable_block": {"type": "Upsampler", "chunk_frames": 5}},
                   {"type": "Decoder", "chunk_frames": 9}]}}]
    text = "Nested stacks."
    np.testing.assert_allclose(fast_addon.build(stack=nested).synthesize(text),
                               fast_addon.build().synthesize(text), atol=1e-5)


def test_top_level_list_is_chained(fast_addon: Addon) -> None:
    stack = copy.deepcopy(SEED_STACK) + [{"type": "Gain", "gain_db": 6.0}]
    text = "Louder."
    plain = fast_addon.build().synthesize(text)
    louder = fast_addon.build(stack=stack).synthesize(text)
    np.testing.assert_allclose(louder - plain, 6.0 * np.log(10) / 20, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("name"), r"addon.json: name: missing"),
    (lambda d: d.update(name="Bad Name"), r"name: 'Bad Name' must match"),
    (lambda d: d["audio"].update(n_mels="80"), r"audio.n_mels: expected int, got str"),
    (lambda d: d["audio"].update(sample_rate=True), r"audio.sample_rate: expected int, got bool"),
    (lambda d: d["audio"].update(hop=256), r"audio.hop: unknown key"),
    (lambda d: d["text"].update(frontend="klingon"), r"text.frontend: unknown front end 'klingon'; known: english-chars"),
    (lambda d: d["networks"]["decoder"].update(file="../decoder.onnx"), r"networks.decoder.file: .* plain file name"),
    (lambda d: d["networks"]["decoder"].update(file="decoder.pt"), r"networks.decoder.file: .*exported as ONNX"),
    (lambda d: d["networks"]["decoder"]["inputs"]["upsampled"].update(dtype="float64"),
     r"networks.decoder.inputs.upsampled.dtype: unknown dtype 'float64'"),
    (lambda d: d["networks"]["decoder"]["inputs"]["upsampled"].update(shape=[0, 128]),
     r"networks.decoder.inputs.upsampled.shape: dimensions must be"),
    (lambda d: d["networks"]["decoder"].update(role="vocoder"), r"networks.decoder.role: unknown role 'vocoder'"),
    (lambda d: d.update(stack={}), r"stack: expected list, got dict"),
    (lambda d: d.update(stack=[]), r"stack: expected a non-empty list"),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][1].update(type="Decodr"),
     r'stack\[0\].streamable_block.stack\[1\]: unknown type "Decodr"; known: .*Decoder'),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][0].pop("type"), r'stack\[0\].streamable_block.stack\[0\]: missing "type"'),
    (lambda d: d["stack"][0].update(sequence_block={"type": "Decoder"}),
     r'stack\[0\].sequence_block: "Decoder" is a StreamableBlock, but a SequenceBlock is expected here'),
    (lambda d: d["stack"][0].pop("sequence_block"), r'stack\[0\]: "StreamablePipeline" needs "sequence_block"'),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][1].update(chunk_size=3),
     r'stack\[0\].streamable_block.stack\[1\].chunk_size: unknown parameter for "Decoder"; accepted: chunk_frames'),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][1].update(chunk_frames="32"),
     r'stack\[0\].streamable_block.stack\[1\].chunk_frames: Decoder expects int, got str'),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][1].update(chunk_frames=0),
     r"stack\[0\].streamable_block.stack\[1\].chunk_frames: must be >= 1"),
    (lambda d: d["stack"][0]["streamable_block"]["stack"][1].update(network="vocoder"),
     r'stack\[0\].streamable_block.stack\[1\]: needs network "vocoder", but the addon declares only: text_encoder'),
    (lambda d: d["stack"][0]["streamable_block"].update(stack="Upsampler"),
     r"stack\[0\].streamable_block.stack: expected a list of blocks, got str"),
    (lambda d: d["networks"]["decoder"].pop("context_frames"), r'declares no "context_frames"'),
    (lambda d: [d["networks"][n].update(role="other") for n in ("text_encoder", "duration_predictor")],
     r'stack\[0\].sequence_block: the addon declares no network with "role": "encoder"'),
])
def test_malformed_addon_names_the_json_path(addon_copy: Path, change: Any, message: str) -> None:
    edit(addon_copy, change)
    with pytest.raises(AddonError, match=message) as info:
        load_addon(addon_copy)
    assert str(addon_copy / "addon.json") in str(info.value)


def test_unknown_type_is_a_stack_error(addon_copy: Path) -> None:
    edit(addon_copy, lambda d: d["stack"][0].update(type="Pipeline"))
    with pytest.raises(StackError, match=r'stack\[0\]: unknown type "Pipeline"'):
        load_addon(addon_copy)


def test_missing_network_file_names_the_file(addon_copy: Path) -> None:
    (addon_copy / "decoder.onnx").unlink()
    with pytest.raises(AddonError, match=r"networks.decoder.file: network file .*decoder.onnx does not exist"):
        load_addon(addon_copy)


def test_malformed_json_names_line_and_column(addon_copy: Path) -> None:
    (addon_copy / "addon.json").write_text('{"name": "x",\n  "version": }')
    with pytest.raises(AddonError, match=r"addon.json: line 2 column 14: malformed JSON"):
        load_addon(addon_copy)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(AddonError, match="no such file"):
        load_addon(tmp_path / "nothing")


def test_addon_json_round_trip_keeps_network_order(fast_addon: Addon) -> None:
    rebuilt = melstream.addon.addon_from_json(fast_addon.to_json())
    assert list(rebuilt.networks) == list(fast_addon.networks)
    assert rebuilt.networks["decoder"] == fast_addon.networks["decoder"]
    with pytest.raises(AddonError, match="no directory"):
        rebuilt.build()
