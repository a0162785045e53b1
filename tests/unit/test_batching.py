from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format

import melstream
from melstream.serving.batching import run_grouped
from melstream.serving.network_model import NetworkModel
from melstream.serving.repo import get_profile, network_config, parse_config

from .test_voice_model import FakePb, FakeRequest, FakeTensor, FakeTritonError


def test_groups_equal_shapes_and_splits_in_order() -> None:
    calls: list[tuple[int, ...]] = []

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feed["x"].shape)
        return {"y": feed["x"] * 2}

    feeds = [{"x": np.full((1, 3), i, np.float32)} for i in range(3)] + [{"x": np.full((2, 5), 9, np.float32)}]
    out = run_grouped(run, feeds)
    assert sorted(calls) == [(2, 5), (3, 3)]
    for i in range(3):
        np.testing.assert_array_equal(out[i]["y"], np.full((1, 3), 2 * i))  # type: ignore[index]
    np.testing.assert_array_equal(out[3]["y"], np.full((2, 5), 18))  # type: ignore[index]


def test_a_failing_group_does_not_fail_the_others() -> None:
    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feed["x"].shape[1] == 4:
            raise ValueError("bad width")
        return {"y": feed["x"]}

    out = run_grouped(run, [{"x": np.zeros((1, 4))}, {"x": np.zeros((1, 2))}])
    assert isinstance(out[0], ValueError) and "bad width" in str(out[0])
    assert not isinstance(out[1], Exception)


# --- the network model around it ------------------------------------------------------------------------

class DoublingSession:
    """An ONNX Runtime session stand-in: ``y = 2 * x``; a run with a row of width 4 fails."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(feed["x"].shape)
        if feed["x"].shape[1] == 4:
            raise ValueError("bad width")
        return [feed["x"] * 2]


def network() -> tuple[NetworkModel, FakePb, DoublingSession]:
    pb = FakePb()
    model = NetworkModel(pb)
    model.name, model.inputs, model.outputs = "tiny__net", ["x"], ["y"]
    model.session = session = DoublingSession()
    return model, pb, session


def net_request(**inputs: np.ndarray) -> FakeRequest:
    return FakeRequest({n: FakeTensor(n, v) for n, v in inputs.items()})


def test_network_model_answers_each_request_in_order_one_batch_per_shape() -> None:
    model, pb, session = network()
    responses = model.execute([net_request(x=np.full((1, 3), 1.0)), net_request(x=np.full((2, 3), 5.0)), net_request(x=np.ones((1, 2)))])
    assert [r.error for r in responses] == [None, None, None]
    np.testing.assert_array_equal(responses[0].tensors["y"], np.full((1, 3), 2.0))
    np.testing.assert_array_equal(responses[1].tensors["y"], np.full((2, 3), 10.0))
    np.testing.assert_array_equal(responses[2].tensors["y"], np.full((1, 2), 2.0))
    assert sorted(session.batches) == [(1, 2), (3, 3)]  # the two width-3 requests ran as one batch of 3 rows


def test_network_model_errors_are_per_request_and_coded() -> None:
    model, pb, _ = network()
    responses = model.execute([net_request(x=np.zeros((1, 4))), net_request(z=np.zeros((1, 3))), net_request(x=np.zeros((1, 3)))])
    failed, missing, fine = responses
    assert FakeTritonError.NAMES[failed.error.code()] == "INTERNAL"
    assert failed.error.message() == "[INTERNAL] internal error: ValueError: bad width"
    assert FakeTritonError.NAMES[missing.error.code()] == "INVALID_ARG"
    assert missing.error.message() == "[INVALID_ARG] input x is missing: model 'tiny__net' needs x"
    assert fine.error is None and fine.tensors["y"].shape == (1, 3)
    (level, logged), = pb.Logger.lines
    assert level == "error" and "ValueError: bad width" in logged and "Traceback" in logged


def test_network_model_initializes_from_the_config_build_repo_writes(fast_addon: melstream.Addon, tmp_path: Path) -> None:
    model_dir = tmp_path / "repo" / "tinyfast__decoder"  # Triton's args["model_repository"] is the model's directory
    model_dir.mkdir(parents=True)
    rel = os.path.relpath(fast_addon.network_path("decoder"), model_dir)
    cfg = network_config(fast_addon, "decoder", get_profile("cpu"), network_file=rel)
    pb = FakePb()
    model = NetworkModel(pb)
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
                      "model_repository": str(model_dir)})
    assert (model.name, model.inputs, model.outputs) == ("tinyfast__decoder", ["upsampled", "length"], ["mel"])
    (response,) = model.execute([net_request(upsampled=np.zeros((1, 5, fast_addon.networks["decoder"].inputs[0].shape[-1]), np.float32),
                                             length=np.full((1, 1), 5, np.int64))])
    assert response.error is None and response.tensors["mel"].shape == (1, 5, 80)


def test_a_cpu_static_network_model_runs_its_buckets_and_refuses_other_sizes(fast_addon: melstream.Addon, tmp_path: Path) -> None:
    from melstream.serving.repo import build_repository

    assert fast_addon.path is not None
    build_repository(fast_addon.path.parent, tmp_path / "repo", profile="cpu-static")
    model_dir = tmp_path / "repo" / "tinyfast__decoder"
    cfg = parse_config((model_dir / "config.pbtxt").read_text())
    model = NetworkModel(FakePb())
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
                      "model_repository": str(model_dir), "model_version": "1"})
    spec = fast_addon.networks["decoder"]
    assert sorted(model.sessions) == list(spec.buckets) and model.session is None
    width = spec.inputs[0].shape[-1]

    def request(frames: int, real: int) -> Any:
        return net_request(upsampled=np.random.default_rng(frames).standard_normal((1, frames, width)).astype(np.float32),
                           length=np.full((1, 1), real, np.int64))

    bucket, odd = model.execute([request(spec.buckets[1], 20), request(spec.buckets[1] + 1, 20)])
    assert bucket.error is None and bucket.tensors["mel"].shape == (1, spec.buckets[1], 80)
    assert odd.error is not None and FakeTritonError.NAMES[odd.error.code()] == "INVALID_ARG"
    assert odd.error.message() == (f"[INVALID_ARG] inputs upsampled {spec.buckets[1] + 1} on the variable axis: model "
                                   f"'tinyfast__decoder' runs at the fixed sizes {', '.join(map(str, spec.buckets))} only "
                                   "(pad to one; its length input says how much is real)")


def test_network_model_refuses_empty_and_out_of_range_inputs_naming_them() -> None:
    model, _, session = network()
    model.ranges = {"x": (0, 9)}
    empty, beyond, negative, fine = model.execute([net_request(x=np.zeros((1, 0))), net_request(x=np.array([[3, 10, 12]])),
                                                   net_request(x=np.array([[-1, 0]])), net_request(x=np.array([[0, 9]]))])
    for response in (empty, beyond, negative):
        assert FakeTritonError.NAMES[response.error.code()] == "INVALID_ARG"
    assert empty.error.message() == "[INVALID_ARG] input x is empty (shape [1, 0]): model 'tiny__net' needs at least one element"
    assert beyond.error.message() == ("[INVALID_ARG] input x holds 2 value(s) outside [0, 9] (e.g. 10): "
                                      "model 'tiny__net' knows 10 symbols")
    assert "outside [0, 9] (e.g. -1)" in negative.error.message()
    assert fine.error is None and session.batches == [(1, 2)]  # only the good request ran


def test_build_repo_writes_the_symbol_range_of_token_inputs(fast_addon: melstream.Addon) -> None:
    from melstream.serving import network_model
    from melstream.serving.repo import input_ranges

    encoder = fast_addon.networks["text_encoder"]
    symbols = encoder.arch["config"]["num_symbols"]
    assert input_ranges(encoder) == {"tokens": [0, symbols - 1]}
    assert input_ranges(fast_addon.networks["decoder"]) == {}  # float frames: no range
    cfg = network_config(fast_addon, "text_encoder", get_profile("cpu"), network_file="x.onnx")
    assert json.loads(cfg.parameters[network_model.INPUT_RANGES_PARAMETER].string_value) == {"tokens": [0, symbols - 1]}
