"""In-process runner on ONNX Runtime (CPU)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.runners.base import Call, Runner

if TYPE_CHECKING:
    from melstream.spec import AddonSpec, NetworkSpec


def onnx_session(path: str, *, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",),
                 device_id: int = 0):  # type: ignore[no-untyped-def]
    """An ONNX Runtime session; ``threads`` intra-op threads (keep it small: streams run in parallel).

    ``providers`` in order of preference; those this onnxruntime build lacks are dropped with a warning
    (e.g. CUDA with the CPU-only ``onnxruntime`` package), and CPU is the last resort. ``device_id`` is
    the GPU of the CUDA provider (Triton's instance device).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    available = set(ort.get_available_providers())
    missing = [p for p in providers if p not in available]
    if missing:
        warnings.warn(f"{path}: onnxruntime {ort.__version__} lacks {', '.join(missing)} (available: {', '.join(sorted(available))}); "
                      "for CUDA install onnxruntime-gpu in place of onnxruntime", RuntimeWarning, stacklevel=2)
    chosen: list[Any] = [(p, {"device_id": device_id}) if p == "CUDAExecutionProvider" else p for p in providers if p in available]
    return ort.InferenceSession(path, sess_options=opts, providers=chosen or ["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        session = onnx_session(str(addon.network_path(spec.name)), threads=self.threads)
        names = list(spec.output_names())

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, inputs), strict=True))

        return call
