"""Runner inside Triton: networks called through BLS from the decoupled pipeline model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.errors import SynthesisError
from melstream.runners.base import Call, Runner, network_model_name
from melstream.runners.batching import BatchPolicy
from melstream.runners.schedule import waiting

if TYPE_CHECKING:
    from melstream_client.spec import AddonSpec, NetworkSpec


class TritonBLSRunner(Runner):
    """``pb_utils`` is the ``triton_python_backend_utils`` module (importable only inside a stub).

    Calls are synchronous ``exec()``: the pipeline model runs each stream in its own thread, and
    Triton's dynamic batcher batches BLS requests that come from different streams.
    """

    name = "triton-bls"

    def __init__(self, pb_utils: Any, *, fixed_shapes: bool = False, batching: BatchPolicy | None = None,
                 lockstep_rows: int = 0) -> None:
        self.pb = pb_utils
        self.fixed_shapes = fixed_shapes
        self.batching = batching  # one BLS request per batch of the voice's streams
        self.lockstep_rows = lockstep_rows

    def rows_for(self, spec: NetworkSpec) -> int:
        # a BLS request is one request to the network model: at most its max_batch_size rows
        return min(self.lockstep_rows, spec.max_batch_size)

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        pb = self.pb
        model = network_model_name(addon.name, spec.name)
        outputs = list(spec.output_names())

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            request = pb.InferenceRequest(model_name=model, requested_output_names=outputs,
                                          inputs=[pb.Tensor(k, v) for k, v in inputs.items()])
            with waiting():  # the work is another process's (or the GPU's): a listener-first slot goes to another stream
                response = request.exec()
            if response.has_error():
                raise SynthesisError(f"network model {model!r}: {response.error().message()}")
            return {n: pb.get_output_tensor_by_name(response, n).as_numpy() for n in outputs}

        return call
