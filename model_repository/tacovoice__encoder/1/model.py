"""Triton Python-backend model serving one exported network of an addon with ONNX Runtime.

The profile's `ort_providers` parameter picks the execution providers (CPU when absent); on a GPU
instance the CUDA provider runs on the GPU Triton gave the instance.

Generated into model_repository/<addon>__<network>/1/model.py by `melstream build-repo`.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from melstream.runners.onnx import onnx_session
from melstream.serving.batching import run_grouped


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # the ONNX file stays in the addon; its path is relative to this model's directory
        path = os.path.normpath(os.path.join(args["model_repository"], params["network_file"]))
        providers = params.get("ort_providers", "CPUExecutionProvider").split(",")
        device_id = int(args.get("model_instance_device_id", "0")) if args.get("model_instance_kind") == "GPU" else 0
        self.session = onnx_session(path, threads=int(params.get("intra_op_threads", "1")), providers=providers, device_id=device_id)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def _run(self, feed):
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))

    def execute(self, requests):
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        responses = []
        for result in run_grouped(self._run, feeds):
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(result).__name__}: {result}")))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in result.items()]))
        return responses
