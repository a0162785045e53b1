"""The network model's logic: one exported network of an addon served with ONNX Runtime as a Triton
Python-backend model.

``python_backends/network/model.py`` is a shim that subclasses :class:`NetworkModel` with the stub's
``triton_python_backend_utils`` module.  The profile's ``ort_providers`` parameter picks the execution
providers (CPU when absent); on a GPU instance the CUDA provider runs on the GPU Triton gave the instance.
Triton's dynamic batcher hands ``execute`` the requests of several streams at once: requests whose
shapes agree run as one batch (:func:`melstream.serving.batching.run_grouped`).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from melstream import wire
from melstream.runners.onnx import onnx_session
from melstream.serving.batching import Feed, run_grouped

# the config parameters build-repo writes (melstream.serving.repo.network_config) and initialize reads
NETWORK_FILE_PARAMETER = "network_file"  # the ONNX file, relative to the model's directory
THREADS_PARAMETER = "intra_op_threads"  # ONNX Runtime's threads per run
PROVIDERS_PARAMETER = "ort_providers"  # ONNX Runtime's execution providers, comma-separated, in order of preference
# JSON {input: [lowest, highest]}: the values an integer input may hold (symbol ids below the embedding's size)
INPUT_RANGES_PARAMETER = "input_ranges"


class NetworkModel:
    """A network as a Triton model.  ``pb_utils`` is the stub's ``triton_python_backend_utils`` module (or a
    stand-in with the same names), looked up when used."""

    def __init__(self, pb_utils: Any) -> None:
        self.pb = pb_utils
        self.name = ""
        self.session: Any = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.ranges: dict[str, tuple[int, int]] = {}

    def initialize(self, args: Mapping[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.name = config["name"]
        # the ONNX file stays in the addon; its path is relative to this model's directory
        path = os.path.normpath(os.path.join(args["model_repository"], params[NETWORK_FILE_PARAMETER]))
        providers = params.get(PROVIDERS_PARAMETER, "CPUExecutionProvider").split(",")
        device_id = int(args.get("model_instance_device_id", "0")) if args.get("model_instance_kind") == "GPU" else 0
        self.session = onnx_session(path, threads=int(params.get(THREADS_PARAMETER, "1")), providers=providers, device_id=device_id)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.ranges = {k: (int(lo), int(hi)) for k, (lo, hi) in json.loads(params.get(INPUT_RANGES_PARAMETER, "{}")).items()}

    def _run(self, feed: Feed) -> Feed:
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))

    def _feed(self, request: Any) -> Feed | str:
        """The request's inputs by name (each ``[batch, ...]``), or why they cannot run, naming the input: one
        is missing, empty (a network needs at least one token or frame), or holds values beyond its range
        (ONNX Runtime would fail on them with a message that names no input)."""
        feed: Feed = {}
        for name in self.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is None:
                return f"input {name} is missing: model {self.name!r} needs {', '.join(self.inputs)}"
            value = tensor.as_numpy()
            if value.size == 0:
                return f"input {name} is empty (shape {list(value.shape)}): model {self.name!r} needs at least one element"
            if name in self.ranges:
                lo, hi = self.ranges[name]
                bad = value[(value < lo) | (value > hi)]
                if bad.size:
                    return (f"input {name} holds {bad.size} value(s) outside [{lo}, {hi}] (e.g. {bad.flat[0]}): "
                            f"model {self.name!r} knows {hi - lo + 1} symbols")
            feed[name] = value
        return feed

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order: the network's outputs, or an error (INVALID_ARG for a missing,
        empty or out-of-range input, INTERNAL for a failed run); one bad request never fails the others."""
        pb = self.pb
        feeds = [self._feed(r) for r in requests]
        valid = [f for f in feeds if not isinstance(f, str)]
        results = iter(run_grouped(self._run, valid))
        responses = []
        for feed in feeds:
            if isinstance(feed, str):
                responses.append(self._error(wire.INPUT_ERROR, feed))
                continue
            result = next(results)
            if isinstance(result, Exception):
                pb.Logger.log_error(f"model {self.name!r}: run failed:\n"
                                    + "".join(traceback.format_exception(type(result), result, result.__traceback__)))
                responses.append(self._error(wire.INTERNAL_ERROR, f"{wire.INTERNAL_ERROR_PREFIX}{type(result).__name__}: {result}"))
            else:
                responses.append(pb.InferenceResponse([pb.Tensor(n, np.ascontiguousarray(v)) for n, v in result.items()]))
        return responses

    def _error(self, code: str, detail: str) -> Any:
        pb = self.pb
        return pb.InferenceResponse(error=pb.TritonError(wire.error_message(code, detail), getattr(pb.TritonError, code)))
