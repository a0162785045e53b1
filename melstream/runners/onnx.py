"""In-process runner on ONNX Runtime (CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from melstream.runners.base import Call, Runner

if TYPE_CHECKING:
    from melstream.addon import Addon, NetworkSpec


def onnx_session(path: str, *, threads: int = 1):  # type: ignore[no-untyped-def]
    """An ONNX Runtime CPU session; ``threads`` intra-op threads (keep it small: streams run in parallel)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads

    def call_for(self, addon: Addon, spec: NetworkSpec) -> Call:
        session = onnx_session(str(addon.network_path(spec.name)), threads=self.threads)
        names = list(spec.output_names())

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, inputs), strict=True))

        return call
