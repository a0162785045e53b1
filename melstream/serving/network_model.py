"""The network model's logic: one exported network of an addon served with ONNX Runtime as a Triton
Python-backend model.

``python_backends/network/model.py`` is a shim that subclasses :class:`NetworkModel` with the stub's
``triton_python_backend_utils`` module.  The profile's ``ort_providers`` parameter picks the execution
providers (CPU when absent); on a GPU instance the CUDA provider runs on the GPU Triton gave the instance.
Triton's dynamic batcher hands ``execute`` the requests of several streams at once: requests whose
shapes agree run as one batch (:func:`melstream.serving.batching.run_grouped`).

In a fixed-shape profile (``cpu-static``) the model runs one frozen ONNX per bucket (the
:data:`STATIC_FILES_PARAMETER` parameter, written by build-repo) and refuses any other size with
INVALID_ARG: the voices pad their calls to a bucket (melstream.runners.fixed).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from melstream.runners.onnx import onnx_session
from melstream.serving.batching import Feed, run_grouped
from melstream_client import wire

# the config parameters build-repo writes (melstream.serving.repo.network_config) and initialize reads
NETWORK_FILE_PARAMETER = "network_file"  # the ONNX file, relative to the model's directory
THREADS_PARAMETER = "intra_op_threads"  # ONNX Runtime's threads per run
PROVIDERS_PARAMETER = "ort_providers"  # ONNX Runtime's execution providers, comma-separated, in order of preference
# JSON {input: [lowest, highest]}: the values an integer input may hold (symbol ids below the embedding's size)
INPUT_RANGES_PARAMETER = "input_ranges"
# JSON {size: file}: the network frozen at each bucket's size (files in the model's version directory); absent:
# the one dynamic ONNX of NETWORK_FILE_PARAMETER
STATIC_FILES_PARAMETER = "static_files"


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
        self.sessions: dict[int, Any] = {}  # fixed shapes: size of the variable axis -> session
        self.variable: dict[str, int] = {}  # input -> its variable axis (batch counted), for fixed shapes

    def initialize(self, args: Mapping[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.name = config["name"]
        # the ONNX file stays in the addon; its path is relative to this model's directory
        path = os.path.normpath(os.path.join(args["model_repository"], params[NETWORK_FILE_PARAMETER]))
        providers = params.get(PROVIDERS_PARAMETER, "CPUExecutionProvider").split(",")
        device_id = int(args.get("model_instance_device_id", "0")) if args.get("model_instance_kind") == "GPU" else 0
        threads = int(params.get(THREADS_PARAMETER, "1"))
        static = json.loads(params.get(STATIC_FILES_PARAMETER, "{}"))
        if static:
            version_dir = os.path.join(args["model_repository"], str(args.get("model_version", "1")))
            self.sessions = {int(size): onnx_session(os.path.join(version_dir, file), threads=threads, providers=providers,
                                                     device_id=device_id) for size, file in static.items()}
            batched = int(config.get("max_batch_size", 0)) > 0
            for t in config["input"]:
                dims = [int(d) for d in t["dims"]]
                if -1 in dims:
                    self.variable[t["name"]] = dims.index(-1) + (1 if batched else 0)
        else:
            self.session = onnx_session(path, threads=threads, providers=providers, device_id=device_id)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.ranges = {k: (int(lo), int(hi)) for k, (lo, hi) in json.loads(params.get(INPUT_RANGES_PARAMETER, "{}")).items()}

    def _run(self, feed: Feed) -> Feed:
        session = self.session
        if self.sessions:  # every request was checked in _feed: its size is a bucket
            name, axis = next(iter(self.variable.items()))
            session = self.sessions[feed[name].shape[axis]]
        return dict(zip(self.outputs, session.run(self.outputs, feed), strict=True))

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
        if self.sessions:
            sizes = {name: feed[name].shape[axis] for name, axis in self.variable.items()}
            if len(set(sizes.values())) != 1 or next(iter(sizes.values())) not in self.sessions:
                return (f"inputs {', '.join(f'{k} {v}' for k, v in sizes.items())} on the variable axis: model {self.name!r} "
                        f"runs at the fixed sizes {', '.join(map(str, sorted(self.sessions)))} only (pad to one; its "
                        "length input says how much is real)")
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
