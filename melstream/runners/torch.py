"""In-process runner on torch: the registered architecture filled with the ONNX file's parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.errors import AddonError
from melstream.runners.base import Call, Runner

if TYPE_CHECKING:
    from melstream_client.spec import AddonSpec, NetworkSpec


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        import torch

        torch.set_num_threads(self.threads)
        module = load_module(addon, spec)
        in_names = [t.name for t in spec.all_inputs()]
        out_names = list(spec.output_names())

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                out = module(*(torch.from_numpy(inputs[n]) for n in in_names))
            outs = out if isinstance(out, tuple) else (out,)
            return {n: o.numpy() for n, o in zip(out_names, outs, strict=True)}

        return call


def load_module(addon: AddonSpec, spec: NetworkSpec) -> Any:
    """The network's registered architecture (``arch``) filled with the parameters of its ONNX file, in eval mode."""
    import onnx
    import torch
    from onnx import numpy_helper

    from melstream.nets import build_net

    if spec.arch is None:
        raise AddonError(f"networks.{spec.name}: no \"arch\" entry, so the torch runner cannot rebuild it")
    module = build_net(spec.arch).eval()
    model = onnx.load(str(addon.network_path(spec.name)))
    params = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    state = module.state_dict()
    missing = sorted(set(state) - set(params))
    if missing:
        raise AddonError(f"networks.{spec.name}: {addon.network_path(spec.name)} lacks parameters {missing[:5]} "
                         f"of architecture {spec.arch['type']!r}")
    module.load_state_dict({k: params[k] for k in state}, strict=True)
    return module
