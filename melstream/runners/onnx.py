"""In-process runner on ONNX Runtime (CPU)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.errors import SynthesisError
from melstream.runners.base import Call, Runner
from melstream.runners.batching import BatchPolicy
from melstream.runners.fixed import size_of
from melstream.runners.static_onnx import frozen_bytes

if TYPE_CHECKING:
    from melstream_client.spec import AddonSpec, NetworkSpec


def onnx_session(path: str | bytes, *, threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",),
                 device_id: int = 0):  # type: ignore[no-untyped-def]
    """An ONNX Runtime session of a model file (or a serialized model); ``threads`` intra-op threads (keep it small: streams run in parallel).

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
        where = path if isinstance(path, str) else "a model in memory"
        warnings.warn(f"{where}: onnxruntime {ort.__version__} lacks {', '.join(missing)} (available: {', '.join(sorted(available))}); "
                      "for CUDA install onnxruntime-gpu in place of onnxruntime", RuntimeWarning, stacklevel=2)
    chosen: list[Any] = [(p, {"device_id": device_id}) if p == "CUDAExecutionProvider" else p for p in providers if p in available]
    return ort.InferenceSession(path, sess_options=opts, providers=chosen or ["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    """Networks in this process on ONNX Runtime's CPU provider.  With ``fixed_shapes`` (the ``cpu-static``
    profile in-process) a network with buckets runs as one frozen model per bucket
    (melstream.runners.static_onnx), and the handles pad, split and crop every call to them."""

    name = "onnxruntime"

    def __init__(self, *, threads: int = 1, fixed_shapes: bool = False, batching: BatchPolicy | None = None,
                 files: Mapping[str, str] | None = None, lockstep_rows: int = 0) -> None:
        self.threads = threads
        self.lockstep_rows = lockstep_rows
        self.fixed_shapes = fixed_shapes
        self.batching = batching
        self.files = dict(files or {})  # network -> its ONNX file, in place of the addon directory's (a served voice)
        if fixed_shapes:
            self.name = "onnxruntime-static"

    def call_for(self, addon: AddonSpec, spec: NetworkSpec) -> Call:
        names = list(spec.output_names())
        path = self.files.get(spec.name) or str(addon.network_path(spec.name))
        if self.fixed_shapes and spec.buckets:
            return static_call(frozen_bytes(path, spec), spec, threads=self.threads)
        session = onnx_session(path, threads=self.threads)

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, inputs), strict=True))

        return call


def static_call(models: Mapping[int, str | bytes], spec: NetworkSpec, *, threads: int = 1,
                providers: Sequence[str] = ("CPUExecutionProvider",), device_id: int = 0) -> Call:
    """A call that runs each input on the frozen model of its size (``models``: bucket -> file or bytes); an
    input of any other size is a :class:`SynthesisError` naming the network and its sizes."""
    sessions = {b: onnx_session(m, threads=threads, providers=providers, device_id=device_id) for b, m in models.items()}
    names = list(spec.output_names())
    length = spec.length.name if spec.length is not None else None

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = size_of(spec, {k: v for k, v in inputs.items() if k != length})
        session = sessions.get(n)
        if session is None:
            raise SynthesisError(f"network {spec.name!r} runs at fixed sizes {', '.join(map(str, sorted(sessions)))}, "
                                 f"not {n}")
        return dict(zip(names, session.run(names, inputs), strict=True))

    return call
