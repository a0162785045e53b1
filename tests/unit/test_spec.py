"""melstream.spec: addon.json as plain data, validated with errors that name the file and the JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from melstream.errors import AddonError
from melstream_client.spec import AddonSpec, addon_spec_from_json, discover_addons, parse_addon_spec, read_addon_spec

from .test_contracts import duration_addon


def parse(data: Any) -> AddonSpec:
    return parse_addon_spec(data, source="x/addon.json", check_files=False)


def changed(change: Any) -> dict[str, Any]:
    data = duration_addon()
    change(data)
    return data


def test_fields_are_read() -> None:
    spec = parse(changed(lambda d: d.update(description="tiny voice", license="MIT")))
    assert (spec.name, spec.version, spec.description, spec.license) == ("tiny", "0", "tiny voice", "MIT")
    assert (spec.audio.sample_rate, spec.audio.hop_length, spec.audio.n_mels, spec.audio.fmax) == (22050, 256, 80, 11025.0)
    assert spec.audio.frames_per_second == pytest.approx(86.1328125)
    enc = spec.networks["text_encoder"]
    assert (enc.role, enc.input_names(), enc.output_names()) == ("encoder", ("tokens",), ("encodings",))
    assert enc.outputs[0].shape == (-1, 24) and enc.options == {"context_tokens": 2} and enc.max_batch_size == 8
    assert spec.stack[0]["type"] == "StreamablePipeline"


def test_json_round_trip_keeps_order() -> None:
    spec = parse(duration_addon())
    again = addon_spec_from_json(spec.to_json(), source="server")
    assert again.raw == spec.raw and list(again.networks) == ["text_encoder", "duration_predictor", "decoder"]
    assert again.path is None and again.source == "server"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(colour="red"), r"x/addon.json: colour: unknown key; allowed: audio, description"),
    (lambda d: d.pop("version"), r"x/addon.json: version: missing"),
    (lambda d: d["audio"].update(n_mels=0), r"audio.n_mels: must be positive, got 0"),
    (lambda d: d["text"].update(max_chars=-1), r"text.max_chars: must be positive, got -1"),
    (lambda d: d["text"].update(symbols=["a", "b", "c"]), r"text.symbols: expected distinct non-empty strings"),
    (lambda d: d.update(networks={}), r"networks: an addon needs at least one network"),
    (lambda d: d["networks"]["decoder"]["inputs"]["upsampled"].update(shape=[0, 3]),
     r"networks.decoder.inputs.upsampled.shape: dimensions must be positive integers or -1, got \[0, 3\]"),
    (lambda d: d["networks"]["decoder"].update(max_batch_size=-2), r"networks.decoder.max_batch_size: must be >= 0, got -2"),
])
def test_errors_name_the_json_path(change: Any, message: str) -> None:
    # more of them, through load_addon, in test_addon.py
    with pytest.raises(AddonError, match=message):
        parse(changed(change))


def test_buckets_are_read() -> None:
    spec = parse(changed(lambda d: d["networks"]["text_encoder"].update(buckets=[8, 16, 64])))
    assert spec.networks["text_encoder"].buckets == (8, 16, 64)
    assert spec.networks["decoder"].buckets == ()  # none: any size
    assert "buckets" not in spec.networks["text_encoder"].options


@pytest.mark.parametrize(("buckets", "message"), [
    ([], r"networks.text_encoder.buckets: expected a non-empty list of positive integers, got \[\]"),
    ([8, 0], r"networks.text_encoder.buckets: expected a non-empty list of positive integers, got \[8, 0\]"),
    ([8, 16.0], r"expected a non-empty list of positive integers"),
    ([True, 16], r"expected a non-empty list of positive integers"),
    ("16", r"networks.text_encoder.buckets: expected list"),
    ([16, 8], r"networks.text_encoder.buckets: expected strictly increasing sizes, got \[16, 8\]"),
    ([8, 8], r"expected strictly increasing sizes"),
    # context_tokens 2: a window of 4 would be context only
    ([4, 16], r"networks.text_encoder.buckets: 4 does not hold more than the network's context_tokens \(2\) on both "
              r"sides: every bucket must exceed 4"),
])
def test_bad_buckets_name_the_json_path(buckets: Any, message: str) -> None:
    with pytest.raises(AddonError, match=message):
        parse(changed(lambda d: d["networks"]["text_encoder"].update(buckets=buckets)))
    assert parse(changed(lambda d: d["networks"]["text_encoder"].update(buckets=[5, 6]))).networks["text_encoder"].buckets == (5, 6)


def test_buckets_need_a_variable_axis() -> None:
    def fixed(d: dict[str, Any]) -> None:
        d["networks"]["decoder"]["inputs"]["upsampled"]["shape"] = [7, 24]
        d["networks"]["decoder"]["buckets"] = [16]
    with pytest.raises(AddonError, match=r"networks.decoder.buckets: the network has no variable axis"):
        parse(changed(fixed))


def test_not_an_object() -> None:
    with pytest.raises(AddonError, match=r"x/addon.json: \(root\): expected a JSON object, got list"):
        parse([])


def test_reading_a_directory_checks_network_files(tmp_path: Path) -> None:
    (tmp_path / "addon.json").write_text(json.dumps(duration_addon()))
    with pytest.raises(AddonError, match=rf"networks.text_encoder.file: network file {tmp_path}/e.onnx does not exist"):
        read_addon_spec(tmp_path)
    for name in ("e.onnx", "d.onnx", "m.onnx"):
        (tmp_path / name).write_bytes(b"")
    spec = read_addon_spec(tmp_path)
    assert spec.path == tmp_path and spec.network_path("decoder") == tmp_path / "m.onnx"
    assert read_addon_spec(tmp_path / "addon.json").raw == spec.raw


def test_reading_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AddonError, match="no such file"):
        read_addon_spec(tmp_path)
    (tmp_path / "addon.json").write_text('{"name": "x",\n "version": }')
    with pytest.raises(AddonError, match=r"addon.json: line 2 column 13: malformed JSON"):
        read_addon_spec(tmp_path)
    (tmp_path / "addon.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(AddonError, match="not UTF-8"):
        read_addon_spec(tmp_path)
    with pytest.raises(AddonError, match="server: malformed JSON"):
        addon_spec_from_json("{", source="server")


def test_a_spec_without_a_directory_has_no_network_files() -> None:
    spec = addon_spec_from_json(json.dumps(duration_addon()), source="voice 'tiny' at localhost:8001")
    with pytest.raises(AddonError, match="voice 'tiny' at localhost:8001: addon 'tiny' has no directory"):
        spec.network_path("decoder")


def test_the_spec_does_not_build_the_stack() -> None:
    # an unknown block type is a building error, not a parsing one: a client can still read the voice's audio spec
    data = copy.deepcopy(duration_addon())
    data["stack"] = [{"type": "SomePluginOnlyTheServerHas"}]
    assert parse(data).audio.n_mels == 80


def test_discover_addons(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "addon.json").write_text("{}")
    (tmp_path / "not-an-addon").mkdir()
    assert discover_addons(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(AddonError, match="addons directory does not exist"):
        discover_addons(tmp_path / "missing")


def with_length(d: dict[str, Any], **entry: Any) -> None:
    net = d["networks"]["text_encoder"]
    net["inputs"]["length"] = {"dtype": "int64", "shape": [1], **entry}
    net["length_input"] = "length"


def test_a_length_input_is_kept_apart_from_the_blocks_inputs() -> None:
    spec = parse(changed(with_length)).networks["text_encoder"]
    assert spec.input_names() == ("tokens",)
    assert spec.length is not None and (spec.length.name, spec.length.dtype, spec.length.shape) == ("length", "int64", (1,))
    assert [t.name for t in spec.all_inputs()] == ["tokens", "length"]
    assert "length_input" not in spec.options
    assert parse(changed(lambda d: None)).networks["text_encoder"].length is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["networks"]["text_encoder"].update(length_input="size"),
     r"networks.text_encoder.length_input: 'size' is not one of the network's inputs \(tokens\)"),
    (lambda d: with_length(d, dtype="int32"),
     r"networks.text_encoder.length_input: input 'length' must be int64 of shape \[1\] .*it is int32 \[1\]"),
    (lambda d: with_length(d, shape=[-1]),
     r"networks.text_encoder.length_input: input 'length' must be int64 of shape \[1\] .*it is int64 \[-1\]"),
    (lambda d: d["networks"]["text_encoder"].update(length_input=3), r"networks.text_encoder.length_input: expected str"),
])
def test_bad_length_inputs_name_the_json_path(change: Any, message: str) -> None:
    with pytest.raises(AddonError, match=message):
        parse(changed(change))


def test_a_length_needs_a_variable_axis_to_measure() -> None:
    def fixed(d: dict[str, Any]) -> None:
        d["networks"]["text_encoder"]["inputs"]["tokens"]["shape"] = [4]
        with_length(d)

    with pytest.raises(AddonError, match=r"networks.text_encoder.length_input: the network's other inputs have no variable axis"):
        parse(changed(fixed))
