"""Runner on a client: networks called on a remote Triton server with tritonclient (gRPC)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from melstream.runners.base import Call, Runner
from melstream_client.wire import network_model_name

if TYPE_CHECKING:
    from melstream_client.spec import AddonSpec, NetworkSpec

_TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


class TritonRemoteRunner(Runner):
    name = "triton-remote"

    def __init__(self, url: str = "localhost:8001", *, timeout_s: float | None = 60.0, fixed_shapes: bool = False) -> None:
        import tritonclient.grpc as grpcclient

        self.fixed_shapes = fixed_shapes  # the server's profile runs its networks at their buckets' sizes only
        self.url = url
        self.timeout_s = timeout_s
        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        g = self._grpc
        model = network_model_name(addon.name, spec.name)
        outputs = list(spec.output_names())
        dtypes = {t.name: _TRITON_DTYPES[t.dtype] for t in spec.all_inputs()}

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            tensors = []
            for name, value in inputs.items():
                t = g.InferInput(name, list(value.shape), dtypes[name])
                t.set_data_from_numpy(value)
                tensors.append(t)
            try:
                result = self.client.infer(model, tensors, outputs=[g.InferRequestedOutput(n) for n in outputs],
                                           client_timeout=self.timeout_s)
            except Exception as e:  # typed as the clients type it (unavailable, timeout...), the server's text kept
                from melstream_client._errors import grpc_error

                raise grpc_error(e, where=f"network model {model!r} at {self.url}") from e
            return {n: result.as_numpy(n) for n in outputs}

        return call
