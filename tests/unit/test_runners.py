from __future__ import annotations

import numpy as np
import pytest

from melstream.addon import Addon
from melstream.errors import SynthesisError
from melstream.runners.base import UnboundRunner
from melstream.runners.onnx import OnnxRuntimeRunner, onnx_session
from melstream.runners.torch import TorchRunner


@pytest.mark.parametrize("voice", ["fast_addon", "taco_addon"])
def test_torch_and_onnxruntime_give_the_same_frames(voice: str, request: pytest.FixtureRequest) -> None:
    addon: Addon = request.getfixturevalue(voice)
    text = "Same stack, two runners: 7 frames or 700."
    a = addon.build(OnnxRuntimeRunner()).synthesize(text)
    b = addon.build(TorchRunner()).synthesize(text)
    assert a.shape == b.shape and len(a) > 0
    assert float(np.abs(a - b).max()) <= 1e-4


def test_network_handle_checks_inputs(fast_addon: Addon) -> None:
    net = OnnxRuntimeRunner().bind(fast_addon, fast_addon.networks["text_encoder"])
    with pytest.raises(SynthesisError, match="network 'text_encoder': input 'tokens' is float32, expected int64"):
        net({"tokens": np.zeros((1, 4), np.float32)})
    with pytest.raises(SynthesisError, match=r"input 'tokens' has shape \(4,\), expected \[1, -1\]"):
        net({"tokens": np.zeros(4, np.int64)})
    with pytest.raises(SynthesisError, match="missing input 'tokens'"):
        net({})
    with pytest.raises(SynthesisError, match="text_encoder' on onnxruntime failed"):
        net({"tokens": np.full((1, 4), 999, np.int64)})  # out-of-range symbol id: the runtime's error, wrapped
    dim = fast_addon.networks["text_encoder"].outputs[0].shape[-1]
    assert net({"tokens": np.zeros((1, 4), np.int64)})["encodings"].shape == (1, 4, dim)


def test_unbound_runner_refuses_to_run(fast_addon: Addon) -> None:
    with pytest.raises(SynthesisError, match="not bound to a runner"):
        fast_addon.build(UnboundRunner()).synthesize("x")


def test_onnx_session_falls_back_to_cpu_when_cuda_is_missing(fast_addon: Addon) -> None:
    """The gpu profile asks for CUDA first; an onnxruntime without it (this CPU package) warns and runs on CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    path = str(fast_addon.network_path("decoder"))
    with pytest.warns(RuntimeWarning, match="lacks CUDAExecutionProvider.*onnxruntime-gpu"):
        session = onnx_session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], device_id=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning):
        assert onnx_session(path, providers=["CUDAExecutionProvider"]).get_providers() == ["CPUExecutionProvider"]


def test_servable_voices_needs_every_network_ready() -> None:
    from melstream.runners.base import servable_voices

    models = [("fast", "READY"), ("fast__dec", "READY"), ("taco", "READY"), ("taco__enc", "UNAVAILABLE"), ("other", "READY")]
    ready = {name for name, state in models if state == "READY"}
    assert servable_voices(ready, {"fast": ["dec"], "taco": ["enc"]}) == ["fast"]
