"""Network models for Triton's native backends: the ``gpu-ort-trt`` and ``gpu-trt`` profiles.

Only NVIDIA's tritonserver image (the Dockerfile's base) has the ``onnxruntime`` and ``tensorrt`` backends; the
pytriton wheel this project tests with has the Python backend alone, so these models are written and parsed here
(tests/unit/test_native.py) but run only on a GPU host.  The voice models stay Python-backend models on the CPU
and call these networks through BLS exactly as they call the Python-backend ones: the wire contract (inputs,
outputs, dims, dynamic batching, bounded queue) is :func:`melstream.serving.repo.network_config`'s, reused here,
not written again: repo.write_addon_models builds it and hands it to :func:`network_config`, then writes the
config and calls :func:`write_network_files` (this module imports nothing of repo's).

Both profiles run at fixed shapes: every ``-1`` of a network's inputs (its one variable axis) takes one of its
``buckets`` (the voices' integration layer pads, splits and crops, melstream.runners.fixed), the batch runs from 1
to ``max_batch_size`` and a length input (``spec.length``, int64 ``[1]``) keeps its ``[1]``.  A network without
buckets is refused (:class:`AddonError`): a TensorRT engine needs the shapes it will run at, and one profile
stretched over the whole variable range would be neither what the fixed-shape integration layer sends nor fast.

* ``gpu-ort-trt``: the addon's ONNX as ``<model>/1/model.onnx``, run by the ``onnxruntime`` backend with the
  TensorRT execution accelerator (ONNX Runtime builds the engines at load, caches them on disk).
* ``gpu-trt``: ``platform: "tensorrt_plan"`` with one plan per GPU compute capability (``cc_model_filenames``),
  built from the same ``<model>/1/model.onnx`` by ``melstream build-plans`` (melstream.serving.plans) on the GPU
  host: plans do not carry over between GPU types or TensorRT versions.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melstream.addon import Addon
from melstream.errors import AddonError, MelstreamError
from melstream_client.spec import NetworkSpec
from melstream_client.wire import network_model_name

if TYPE_CHECKING:
    from melstream.serving.repo import Profile

#: the ONNX file of a native network model, in its version directory (where Triton's backends look for it)
ONNX_FILE = "model.onnx"
#: the version directory Triton's native backends read
VERSION = "1"
#: GPU compute capabilities gpu-trt repositories map to plans (T4, A100, A10/RTX 30xx, L4/L40/RTX 40xx, H100/H200);
#: `melstream build-plans` builds for those present on its machine
COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "9.0")
#: where ONNX Runtime's TensorRT accelerator keeps the engines it builds: a directory of the model's (Triton reads
#: only numbered ones as versions), under a key naming the GPU and TensorRT (:func:`machine_key`); rebuilding the
#: repository (new ONNX, perhaps) starts an empty cache
TRT_CACHE_DIR = "trt_cache"

#: one TensorRT optimisation profile: input name -> (min, opt, max) full shapes, batch first
ShapeProfile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

ORT_TRT_ACCELERATOR = "tensorrt"
# FP32: the GPU profiles must reproduce the CPU's outputs as cpu-static does (fastvoice within 1e-4, tacovoice
# within 1e-3 with the same stop step), which FP16
# (about 1e-3 relative) does not.  Note TensorRT may still pick TF32 kernels on Ampere and later; the r24.10
# onnxruntime backend has no parameter to forbid them (its TensorRT parameters: src/onnxruntime.cc), so the
# tolerance must be checked on a GPU (never done in this project yet).  `build-plans` passes --noTF32.
ORT_TRT_PRECISION = "FP32"


def plan_filename(compute_capability: str) -> str:
    """``model.sm80.plan`` for compute capability ``"8.0"``: the plan file gpu-trt maps that capability to."""
    return f"model.sm{compute_capability.replace('.', '')}.plan"


def _variable_range(spec: NetworkSpec, *, addon: str) -> tuple[int, ...]:
    if not spec.buckets:
        raise AddonError(f"addon {addon!r}: network {spec.name!r} declares no buckets: fixed-shape profiles (TensorRT "
                         f"engines) are built for the sizes of its variable axis; add \"buckets\" to addon.json")
    return spec.buckets


def batch_range(spec: NetworkSpec) -> tuple[int, int, int]:
    """(min, opt, max) of the batch dimension: 1 to ``max_batch_size``, optimised for the largest (where TensorRT
    matters most); a network without batching still has the ONNX's leading batch of 1."""
    top = max(spec.max_batch_size, 1)
    return 1, top, top


def input_shape(spec: NetworkSpec, tensor_name: str, *, bucket: int, batch: int) -> tuple[int, ...]:
    """The full ONNX shape of input ``tensor_name`` at ``bucket`` and ``batch``: the batch first, every ``-1`` the
    bucket (the length input keeps its ``[1]``)."""
    t = next(t for t in spec.all_inputs() if t.name == tensor_name)
    return (batch, *(bucket if d == -1 else d for d in t.shape))


def profile_shapes(spec: NetworkSpec, bucket: int) -> ShapeProfile:
    """One TensorRT optimisation profile: input name -> (min, opt, max) shapes at ``bucket``, batch 1 to max."""
    lo, opt, hi = batch_range(spec)
    return {t.name: (input_shape(spec, t.name, bucket=bucket, batch=lo), input_shape(spec, t.name, bucket=bucket, batch=opt),
                     input_shape(spec, t.name, bucket=bucket, batch=hi))
            for t in spec.all_inputs()}


def shapes_spec(shapes: dict[str, tuple[int, ...]]) -> str:
    """``tokens:1x64,length:1x1``: the shape syntax of trtexec and of ONNX Runtime's trt_profile_*_shapes."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


@functools.cache
def machine_key() -> str:
    """``<gpu-name>-sm<cc>-trt<version>`` of this machine (``unknown-gpu``/``trt-unknown`` for what it cannot
    tell): the directory under a model's :data:`TRT_CACHE_DIR` that ONNX Runtime's engines are cached in, so an
    engine is never loaded on another GPU model or TensorRT version.  Known only where the repository is built on the GPU
    host (`melstream serve --profile`, at container start, does that); a repository built elsewhere says unknown."""
    gpu = "unknown-gpu"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
        if out:
            name, _, cc = out[0].partition(",")
            gpu = f"{name.strip()}-sm{cc.strip().replace('.', '')}"
    except (OSError, subprocess.SubprocessError):
        pass
    trt = "trt-unknown"
    try:
        trt = "trt" + importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        libs = sorted(glob.glob("/usr/lib/*/libnvinfer.so.*.*.*"))  # NVIDIA's image: libnvinfer.so.10.5.0
        if libs:
            trt = "trt" + libs[-1].split(".so.", 1)[1]
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{gpu}-{trt}")


def trt_cache_path(model_dir: Path) -> Path:
    """Where ONNX Runtime caches the TensorRT engines of the model in ``model_dir`` (its final, absolute place)."""
    return model_dir / TRT_CACHE_DIR / machine_key()


def network_config(cfg: Any, addon: Addon, network: str, profile: Profile, *, final_root: Path) -> Any:
    """``cfg`` (``repo.network_config``'s model of ``network``: the wire contract, warm-ups one per bucket
    included) made the model of a native profile's backend (``profile.network_backend``: ``onnxruntime`` or
    ``tensorrt``) in a repository that will be served from ``final_root``; returns it.  Raises
    :class:`AddonError` for a network without buckets."""
    spec = addon.networks[network]
    buckets = _variable_range(spec, addon=addon.name)
    assert cfg.name == network_model_name(addon.name, network), cfg.name
    # what the Python backend alone reads; the rest stays: inputs, outputs, dims, dynamic batching, bounded
    # queue, instance kind and count, and one zero-filled warm-up per bucket (repo.add_warmups: each engine is
    # built or loaded and allocated on every instance before the model is ready; a length input gets zeros too,
    # a warm-up's outputs are not read)
    cfg.ClearField("backend")
    cfg.ClearField("parameters")
    if profile.network_backend == "onnxruntime":
        cfg.backend = "onnxruntime"
        accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accel.name = ORT_TRT_ACCELERATOR
        params = accel.parameters
        params["precision_mode"] = ORT_TRT_PRECISION
        params["trt_engine_cache_enable"] = "1"
        params["trt_engine_cache_path"] = str(trt_cache_path(final_root.resolve() / cfg.name))
        # One explicit profile, smallest bucket to largest: the r24.10 backend passes trt_profile_*_shapes on to
        # ONNX Runtime (src/onnxruntime.cc), whose syntax for several profiles could not be confirmed here.  With
        # an explicit range, ONNX Runtime builds its engine once instead of again at each new shape.
        lo, hi = profile_shapes(spec, buckets[0]), profile_shapes(spec, buckets[-1])
        params["trt_profile_min_shapes"] = shapes_spec({n: s[0] for n, s in lo.items()})
        params["trt_profile_opt_shapes"] = shapes_spec({n: s[1] for n, s in hi.items()})
        params["trt_profile_max_shapes"] = shapes_spec({n: s[2] for n, s in hi.items()})
    elif profile.network_backend == "tensorrt":
        cfg.platform = "tensorrt_plan"
        cfg.backend = "tensorrt"
        for cc in COMPUTE_CAPABILITIES:
            cfg.cc_model_filenames[cc] = plan_filename(cc)
        # every instance gets one execution context per optimisation profile (one per bucket, in bucket order:
        # melstream build-plans builds them so), and Triton picks the one whose shapes fit a request
        for group in cfg.instance_group:
            group.profile.extend(str(i) for i in range(len(buckets)))
    else:
        raise MelstreamError(f"profile {profile.name!r}: network backend {profile.network_backend!r} is not a native "
                         f"Triton backend melstream writes (onnxruntime, tensorrt)")
    return cfg


def write_network_files(addon: Addon, network: str, profile: Profile, *, model_dir: Path) -> None:
    """The files of ``network``'s native model beside its config: ``1/model.onnx``, a copy of the addon's ONNX
    (native backends read the version directory; build-plans reads it too), and for gpu-ort-trt its engine cache
    directory (made here: ONNX Runtime may not create nested directories)."""
    (model_dir / VERSION).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(addon.network_path(network), model_dir / VERSION / ONNX_FILE)
    if profile.network_backend == "onnxruntime":
        trt_cache_path(model_dir).mkdir(parents=True)
