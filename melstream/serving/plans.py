"""``melstream build-plans``: the TensorRT plans of a ``gpu-trt`` model repository.

A plan (serialized TensorRT engine) is built for one GPU compute capability and one TensorRT version, and does
not carry over to another GPU type or another TensorRT: so plans are not made by ``build-repo`` (which runs at
image build, where no GPU is) but here, on the GPU host, at container start (`melstream serve --profile`) or in an image
build that runs on the target GPU type.  For every ``tensorrt_plan`` network model of the repository, one plan per
compute capability present on the machine (or asked for), written where the model's ``cc_model_filenames`` says
(``<model>/1/model.sm80.plan``), from the addon's ONNX that build-repo copied beside it (``<model>/1/model.onnx``).

Each plan holds one optimisation profile per bucket of the network, in bucket order (the model's instance group
lists them so): every ``-1`` of the inputs is that bucket (min = opt = max), the batch runs from 1 to
``max_batch_size`` (optimised at the largest), a length input keeps ``[1]``.  Precision FP32 with TF32 off: the
GPU must reproduce the CPU's outputs within 1e-4 (mel) and 1e-3 (durations).

It runs ``trtexec`` (NVIDIA's tritonserver image has /usr/src/tensorrt/bin/trtexec) or, without it, TensorRT's
Python API (``tensorrt`` importable); ``--dry-run`` prints the trtexec commands and builds nothing.  Several
profiles are given to trtexec as ``--profile=N`` followed by that profile's ``--minShapes``/``--optShapes``/
``--maxShapes`` (trtexec's samples/common/sampleOptions.cpp: repeated shape flags without ``--profile`` are refused).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from melstream.errors import MelstreamError
from melstream.serving import native
from melstream_client.spec import NetworkSpec, addon_spec_from_json
from melstream_client.wire import ADDON_PARAMETER, network_model_name

#: where NVIDIA's TensorRT and Triton images keep trtexec (not on PATH there)
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)
PLATFORM = "tensorrt_plan"


@dataclass(frozen=True)
class PlanJob:
    """One plan to build: ``onnx`` to ``plan`` for ``compute_capability`` (on CUDA device ``device``, if known),
    with ``profiles`` (one per bucket, in order)."""

    model: str
    onnx: Path
    plan: Path
    compute_capability: str
    profiles: tuple[native.ShapeProfile, ...]
    device: int | None = None


def gpus() -> list[tuple[int, str]]:
    """(CUDA device index, compute capability ``"8.6"``) of each NVIDIA GPU here (``nvidia-smi``); none without."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        index, _, cc = line.partition(",")
        if index.strip().isdigit() and cc.strip():
            found.append((int(index), cc.strip()))
    return found


def _specs(repo: Path) -> dict[str, NetworkSpec]:
    """Network model name -> its NetworkSpec, from the voices' configs (the addon JSON they carry)."""
    from melstream.serving.repo import parse_config

    specs: dict[str, NetworkSpec] = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = parse_config(path.read_text())
        if ADDON_PARAMETER in cfg.parameters:
            addon = addon_spec_from_json(cfg.parameters[ADDON_PARAMETER].string_value, source=str(path))
            specs.update({network_model_name(addon.name, n): s for n, s in addon.networks.items()})
    return specs


def plan_jobs(repo: str | Path, *, compute_capabilities: Sequence[str] | None = None,
              devices: Sequence[tuple[int, str]] | None = None) -> list[PlanJob]:
    """The plans ``repo`` (a gpu-trt repository) needs: per ``tensorrt_plan`` model, one per compute capability
    (``compute_capabilities``, else those of ``devices``, by default this machine's GPUs, once each).  Raises
    :class:`MelstreamError` for a repository that is not gpu-trt, a capability no config maps to a plan, or no
    capability at all (no GPU found and none asked for)."""
    from melstream.serving.repo import parse_config

    repo = Path(repo)
    if not repo.is_dir():
        raise MelstreamError(f"{repo}: no model repository there (build one with melstream build-repo --profile gpu-trt)")
    models = []
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = parse_config(path.read_text())
        if cfg.platform == PLATFORM:
            models.append(cfg)
    if not models:
        raise MelstreamError(f"{repo}: not a gpu-trt repository (no {PLATFORM} network model); TensorRT plans are "
                             f"built for repositories written by melstream build-repo --profile gpu-trt")
    devices = gpus() if devices is None else list(devices)
    device_of: dict[str, int] = {}
    for index, cc in devices:
        device_of.setdefault(cc, index)
    ccs = list(dict.fromkeys(compute_capabilities or device_of))
    if not ccs:
        raise MelstreamError("no NVIDIA GPU found (nvidia-smi lists none): plans are built on the GPU they run on; "
                             "pass --compute-capability to print the commands for one anyway (--dry-run)")
    specs = _specs(repo)
    jobs = []
    for cfg in models:
        spec = specs.get(cfg.name)
        if spec is None:
            raise MelstreamError(f"{repo / cfg.name}: no voice of the repository declares network model {cfg.name!r}")
        for cc in ccs:
            if cc not in cfg.cc_model_filenames:
                raise MelstreamError(f"{repo / cfg.name}: compute capability {cc} has no plan in cc_model_filenames "
                                     f"(mapped: {', '.join(cfg.cc_model_filenames)}); melstream.serving.native."
                                     f"COMPUTE_CAPABILITIES lists the supported ones")
            version = repo / cfg.name / native.VERSION
            jobs.append(PlanJob(model=cfg.name, onnx=version / native.ONNX_FILE, plan=version / cfg.cc_model_filenames[cc],
                                compute_capability=cc, device=device_of.get(cc),
                                profiles=tuple(native.profile_shapes(spec, b) for b in spec.buckets)))
    return jobs


def trtexec_command(job: PlanJob, *, trtexec: str = "trtexec") -> list[str]:
    """The trtexec command line that builds ``job``'s plan: FP32 without TF32, no benchmark run, one
    ``--profile=N --minShapes=.. --optShapes=.. --maxShapes=..`` group per bucket."""
    cmd = [trtexec, f"--onnx={job.onnx}", f"--saveEngine={job.plan}", "--noTF32", "--skipInference"]
    if job.device is not None:
        cmd.append(f"--device={job.device}")
    for i, profile in enumerate(job.profiles):
        cmd.append(f"--profile={i}")
        for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            cmd.append(f"{flag}={native.shapes_spec({name: shapes[k] for name, shapes in profile.items()})}")
    return cmd


def find_trtexec() -> str | None:
    """trtexec on PATH, else where NVIDIA's images keep it; None if neither."""
    return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)


def build_with_python(job: PlanJob) -> None:
    """Build ``job``'s plan with TensorRT's Python API (what trtexec does, for hosts with the wheel only)."""
    import tensorrt as trt  # type: ignore[import-not-found]

    if job.device not in (None, 0):
        raise MelstreamError(f"{job.model}: TensorRT's Python API builds here on CUDA device 0 only, not {job.device} "
                             f"(compute capability {job.compute_capability}); use trtexec, which takes --device")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MelstreamError(f"{job.onnx}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    for shapes in job.profiles:
        opt = builder.create_optimization_profile()
        for name, (lo, mid, hi) in shapes.items():
            opt.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MelstreamError(f"{job.model}: TensorRT could not build a plan for compute capability {job.compute_capability}")
    job.plan.write_bytes(bytes(plan))


def build_plans(repo: str | Path, *, compute_capabilities: Sequence[str] | None = None, dry_run: bool = False,
                say: Callable[[str], None] = print) -> list[PlanJob]:
    """Build (or with ``dry_run``, print the trtexec command of) every plan :func:`plan_jobs` lists; returns them.
    Raises :class:`MelstreamError` naming what failed, or what to install when neither trtexec nor TensorRT's
    Python package is here."""
    jobs = plan_jobs(repo, compute_capabilities=compute_capabilities, devices=[] if dry_run and compute_capabilities else None)
    if dry_run:
        for job in jobs:
            say(shlex.join(trtexec_command(job)))
        return jobs
    missing = [j.compute_capability for j in jobs if j.device is None]
    if missing:
        raise MelstreamError(f"no GPU of compute capability {', '.join(sorted(set(missing)))} here: a plan is built on "
                             f"the GPU type it runs on (GPUs here: {', '.join(cc for _, cc in gpus()) or 'none'})")
    trtexec = find_trtexec()
    if trtexec is None:
        try:
            import tensorrt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise MelstreamError("neither trtexec (on PATH or /usr/src/tensorrt/bin) nor TensorRT's Python package is "
                                 "here: run in NVIDIA's tritonserver or TensorRT image, or pip install tensorrt") from None
    for job in jobs:
        say(f"building {job.plan} (compute capability {job.compute_capability}, {len(job.profiles)} profiles)")
        if trtexec is None:
            build_with_python(job)
            continue
        proc = subprocess.run(trtexec_command(job, trtexec=trtexec), capture_output=True, text=True)
        if proc.returncode != 0 or not job.plan.is_file():
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise MelstreamError(f"{job.model}: trtexec failed (exit {proc.returncode}) building {job.plan}:\n{tail}")
    say(f"built {len(jobs)} plans")
    return jobs
