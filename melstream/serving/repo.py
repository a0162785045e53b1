"""Generate a Triton model repository from addons, for a deployment profile.

One source of truth: :func:`model_configs` returns protobuf ``ModelConfig`` objects; ``config.pbtxt``
files are their text form, and :func:`parse_config` reads them back (tests check the round trip).
Generated files are never edited by hand: run ``melstream build-repo``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melstream.addon import Addon, discover_addons, load_addon
from melstream.errors import AddonError, MelstreamError
from melstream.runners.base import UnboundRunner, network_model_name
from melstream.runners.fixed import check_fixed
from melstream.runners.static_onnx import frozen_bytes, static_file_name
from melstream.serving import capacity, network_model, voice_model
from melstream_client import wire

BACKENDS_DIR = Path(__file__).resolve().parent.parent.parent / "python_backends"

WARMUP_LENGTH = 8  # frames or tokens of the zero-filled warm-up request each network instance runs at load

_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}


@dataclass(frozen=True)
class Profile:
    """Where and how networks run: the hardware is a deployment profile, not a code path.

    Admission: a voice admits as many streams at once as the host it runs on keeps in real time, as it measures
    while it serves (``admission_headroom``: melstream.serving.capacity), and never more than :meth:`streams_for`
    (``voice_max_streams`` for the voices measured on this profile's hardware, ``max_streams`` for any other); it
    refuses the next at once (melstream.serving.voice_model).  Each network model's queue holds at most ``queue_per_stream`` requests
    per stream its voice admits, and a request waits in it at most ``queue_timeout_us``: work can never pile
    up without bound, and the voice's own streams (one call per network at a time each) never fill it."""

    name: str
    description: str
    network_instances: int = 1
    intra_op_threads: int = 1
    max_queue_delay_us: int = 100
    max_streams: int = voice_model.DEFAULT_MAX_STREAMS  # a voice not measured yet
    voice_max_streams: Mapping[str, int] = dataclasses.field(default_factory=dict)
    queue_per_stream: int = 2
    queue_timeout_us: int = 5_000_000
    network_kind: str = "KIND_CPU"  # Triton instance kind of the network models; voices always run on CPU
    # ONNX Runtime execution providers in order of preference; None writes no parameter (CPU only)
    ort_providers: tuple[str, ...] | None = None
    # how the network models run: "python" (a Python-backend model wrapping ONNX Runtime, melstream's own),
    # "onnxruntime" (Triton's native ONNX Runtime backend) or "tensorrt" (native TensorRT plans); the voice
    # models are always Python-backend models calling the networks through BLS
    network_backend: str = "python"
    # fixed shapes: every network runs only at the sizes of its buckets; the voices' integration layer pads,
    # splits and crops (melstream.runners.fixed), so the same addon and stack run unchanged
    fixed_shapes: bool = False
    # where a voice runs its networks: "triton" (its network models, one BLS request per call or batch) or
    # "voice" (ONNX Runtime inside the voice model's own process: no BLS hop per call); the network models are
    # written either way (clients' remote pipelines and direct calls use them)
    network_placement: str = "triton"
    # per voice, overriding network_placement (measured per voice, like voice_max_streams)
    voice_placement: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # cross-stream batching in the voice (melstream.runners.batching): a call waits at most this long for other
    # streams' calls to the same network, to run with them as one padded batch; 0 = every call alone
    batch_wait_us: int = 0
    # the most rows such a batch holds when the networks run in the voice (through Triton: the network's own
    # max_batch_size)
    voice_max_batch: int = 64
    # rows one lockstep step of a recurrent block carries (melstream.runners.lockstep: tacovoice's attention steps
    # every stream in one call per frame); through Triton also at most the network's max_batch_size; 0 = off
    lockstep_rows: int = 0
    # listener-first scheduling in each voice (melstream.runners.schedule): at most this many of its streams compute
    # a chunk at once, earliest deadline first; 0 = off
    compute_slots: int = 0
    # the share of the streams this host can keep in real time, as each voice measures it while it serves, that
    # the voice admits (melstream.serving.capacity); the streams above are the upper bound; 0: admit them whatever
    # the host can do
    admission_headroom: float = capacity.HEADROOM

    def streams_for(self, voice: str) -> int:
        """The streams ``voice`` admits at once."""
        return self.voice_max_streams.get(voice, self.max_streams)

    def placement_for(self, voice: str) -> str:
        """Where ``voice`` runs its networks: "triton" or "voice"."""
        return self.voice_placement.get(voice, self.network_placement)


# Streams each shipped voice admits at once on the 2-core CPU machine of BENCHMARKS.md (section 1, each
# voice alone): fastvoice streams to 32 listeners with no stalls (RTF 0.17, first chunk p99 211 ms);
# tacovoice makes ~23 s of speech per second in all, so 16 listeners (RTF 0.65; 14 % of utterances stall
# once for a few ms right after the first chunk) leave it a third of headroom, where 20 would run within
# the ±25 % run-to-run spread of saturation and 32 stall every utterance (RTF 1.2).  A voice not measured
# gets the profile's max_streams; `melstream build-repo --max-streams [VOICE=]N` overrides either.
MEASURED_MAX_STREAMS = {"fastvoice": 32, "tacovoice": 16}
# The same on the cpu profile (BENCHMARKS.md section 7): with its networks in the voice, lockstep steps and
# listener-first turns, neither voice stalls an utterance up to the largest level measured, 64 closed-loop
# streams (first chunk p99: fastvoice 156 ms, tacovoice 203 ms; RTF 0.11 and 0.33), and a listener in real time
# asks far less than a closed-loop client.
CPU_MAX_STREAMS = {"fastvoice": 64, "tacovoice": 64}

# Rows of one lockstep step (melstream.runners.lockstep): every stream of a voice on these 2 cores (its admission
# limit is below this); through Triton (BLS) a step also carries at most the network's max_batch_size rows, so a
# step of 32 streams is 4 requests of 8 instead of 32 requests
LOCKSTEP_ROWS = 64

PROFILES = {
    # Each voice runs its networks inside its voice model (ONNX Runtime, no BLS hop per call: a step of
    # tacovoice's attention computes in far less than a round trip; BENCHMARKS.md section 6), and tacovoice's
    # attention steps every stream in one call per frame (melstream.runners.lockstep; section 7).  The network
    # models are still written: clients' remote pipelines and direct calls use them.
    "cpu": Profile("cpu", "each voice runs its networks with ONNX Runtime in its own voice model; tacovoice steps "
                          "all its streams' attention in one call per frame",
                   network_instances=2, voice_max_streams=CPU_MAX_STREAMS, network_placement="voice",
                   lockstep_rows=LOCKSTEP_ROWS, compute_slots=2),
    # Two instances per network: with one, every stream's calls to a network queue behind each other on
    # one core, and a new stream's first chunk waits behind the others' chunks (benchmarks/streams.py:
    # on 2 cores, 2 instances cut fastvoice's first chunk p50 at 32 streams by a third and raise RTFX).
    "cpu-bls": Profile("cpu-bls", "Python backend with ONNX Runtime on CPU, two instances of one thread per network; "
                                  "the voices call them through BLS, one request per call",
                       network_instances=2, voice_max_streams=MEASURED_MAX_STREAMS),
    # Not measured on a GPU yet: the voice pipelines stay on CPU (tacovoice's per-frame calls are bound by
    # them), so the CPU figures are the safe start; raise them with --max-streams once benchmarks show room.
    "gpu": Profile("gpu", "Python backend with ONNX Runtime's CUDA provider, one network instance per GPU "
                          "(CPU if CUDA is missing); the voice pipelines stay on CPU",
                   voice_max_streams=MEASURED_MAX_STREAMS,
                   network_kind="KIND_GPU", ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                   lockstep_rows=LOCKSTEP_ROWS),
    # The proof on this machine that fixed-shape execution is exact, and the artefacts a compile-ahead
    # accelerator (AWS Neuron) starts from: one ONNX per bucket with no variable axis but the batch.
    "cpu-static": Profile("cpu-static", "Python backend with ONNX Runtime on CPU, one fixed-shape ONNX per bucket "
                                        "(no variable axis but the batch); the voices pad, split and crop",
                          network_instances=2, voice_max_streams=MEASURED_MAX_STREAMS, fixed_shapes=True,
                          lockstep_rows=LOCKSTEP_ROWS),
    # Native Triton backends (NVIDIA's tritonserver image, not the pytriton wheel): see melstream.serving.native.
    "gpu-ort-trt": Profile("gpu-ort-trt", "Triton's onnxruntime backend with the TensorRT execution accelerator, "
                                          "one optimisation profile per bucket; the voice pipelines stay on CPU",
                           voice_max_streams=MEASURED_MAX_STREAMS, network_kind="KIND_GPU",
                           network_backend="onnxruntime", fixed_shapes=True, lockstep_rows=LOCKSTEP_ROWS),
    "gpu-trt": Profile("gpu-trt", "Triton's tensorrt backend with plans built per GPU compute capability by "
                                  "melstream build-plans, one optimisation profile per bucket",
                       voice_max_streams=MEASURED_MAX_STREAMS, network_kind="KIND_GPU",
                       network_backend="tensorrt", fixed_shapes=True, lockstep_rows=LOCKSTEP_ROWS),
}


#: where a voice may run its networks (Profile.network_placement)
PLACEMENTS = ("triton", "voice")


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise MelstreamError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


def _mc() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def input_ranges(spec: Any) -> dict[str, list[int]]:
    """The values each integer input of a network may hold: symbol ids, below its architecture's
    ``num_symbols`` (the embedding's size), for a network that declares one; none for the others."""
    symbols = (spec.arch or {}).get("config", {}).get("num_symbols")
    if not isinstance(symbols, int) or symbols <= 0:
        return {}
    return {t.name: [0, symbols - 1] for t in spec.inputs if t.dtype.startswith(("int", "uint"))}


def network_config(addon: Addon, network: str, profile: Profile, *, network_file: str) -> Any:
    mc = _mc()
    spec = addon.networks[network]
    cfg = mc.ModelConfig(name=network_model_name(addon.name, network), backend="python",
                         max_batch_size=spec.max_batch_size)
    for tensors, field in ((spec.all_inputs(), cfg.input), (spec.outputs, cfg.output)):
        for t in tensors:
            io = field.add()
            io.name = t.name
            io.data_type = getattr(mc, _TYPES[t.dtype])
            # without batching, Triton's dims hold the whole shape, batch of 1 included
            io.dims.extend(list(t.shape) if spec.max_batch_size else [1, *t.shape])
    if spec.max_batch_size:
        cfg.dynamic_batching.max_queue_delay_microseconds = profile.max_queue_delay_us
        # a bounded queue: each admitted stream of the voice has at most one call to this network waiting, so
        # its streams never fill it; the rest is room for remote pipelines (clients calling the network
        # directly).  A full queue refuses at once, and a call that waited past the timeout is refused
        # (REJECT): both UNAVAILABLE (wire.QUEUE_REFUSALS), never an unbounded backlog.
        policy = cfg.dynamic_batching.default_queue_policy
        policy.max_queue_size = profile.queue_per_stream * profile.streams_for(addon.name)
        policy.timeout_action = mc.ModelQueuePolicy.REJECT
        policy.default_timeout_microseconds = profile.queue_timeout_us
        policy.allow_timeout_override = False
    group = cfg.instance_group.add()
    group.count = profile.network_instances  # per GPU for KIND_GPU
    group.kind = getattr(mc.ModelInstanceGroup, profile.network_kind)
    add_warmups(cfg, spec, warmup_sizes(spec, profile))
    cfg.parameters[network_model.NETWORK_FILE_PARAMETER].string_value = network_file
    cfg.parameters[network_model.THREADS_PARAMETER].string_value = str(profile.intra_op_threads)
    if profile.ort_providers is not None:
        cfg.parameters[network_model.PROVIDERS_PARAMETER].string_value = ",".join(profile.ort_providers)
    ranges = input_ranges(spec)
    if ranges:
        cfg.parameters[network_model.INPUT_RANGES_PARAMETER].string_value = json.dumps(ranges, sort_keys=True)
    return cfg


def warmup_sizes(spec: Any, profile: Profile) -> tuple[int, ...]:
    """The sizes of the variable axis a network model is warmed up at: every bucket at fixed shapes (each is
    its own compiled model or engine), else one small length."""
    return tuple(spec.buckets) if profile.fixed_shapes and spec.buckets else (WARMUP_LENGTH,)


def add_warmups(cfg: Any, spec: Any, sizes: Iterable[int]) -> None:
    """One zero-filled warm-up request per size of the variable axis (every input's -1 gets that size).

    Triton runs them on every instance before the model is ready, so no listener's first chunk pays an
    instance's cold start (ONNX Runtime plans and allocates on its first run at each shape)."""
    mc = _mc()
    for size in sizes:
        warm = cfg.model_warmup.add()
        warm.name = f"zeros-{size}"
        warm.batch_size = 1
        for t in spec.all_inputs():
            inp = warm.inputs[t.name]
            inp.data_type = getattr(mc, _TYPES[t.dtype])
            inp.dims.extend([size if d == -1 else d for d in (t.shape if spec.max_batch_size else (1, *t.shape))])
            inp.zero_data = True


def pipeline_config(addon: Addon, profile: Profile, *, final_root: Path | None = None) -> Any:
    mc = _mc()
    cfg = mc.ModelConfig(name=addon.name, backend="python", max_batch_size=0)
    cfg.model_transaction_policy.decoupled = True
    for inp in wire.INPUTS:
        io = cfg.input.add()
        io.name = inp.name
        io.data_type = getattr(mc, inp.config_type)
        io.dims.append(1)
        io.optional = inp.optional
    out = cfg.output.add()
    out.name = wire.MEL
    out.data_type = mc.TYPE_FP32
    out.dims.extend([-1, addon.audio.n_mels])
    if addon.build(UnboundRunner()).produces_audio:
        audio = cfg.output.add()
        audio.name = wire.AUDIO
        audio.data_type = mc.TYPE_FP32
        audio.dims.append(-1)
    words = cfg.output.add()  # sent only when a request asks for TIMESTAMPS
    words.name = wire.WORDS
    words.data_type = mc.TYPE_STRING
    words.dims.append(1)
    group = cfg.instance_group.add()
    group.count = 1  # one instance: streams run in its worker threads
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    cfg.parameters[wire.ADDON_PARAMETER].string_value = addon.to_json()
    cfg.parameters[wire.FIXED_SHAPES_PARAMETER].string_value = "true" if profile.fixed_shapes else "false"
    placement = profile.placement_for(addon.name)
    cfg.parameters[voice_model.PLACEMENT_PARAMETER].string_value = placement
    cfg.parameters[voice_model.BATCH_WAIT_PARAMETER].string_value = str(profile.batch_wait_us)
    cfg.parameters[voice_model.VOICE_MAX_BATCH_PARAMETER].string_value = str(profile.voice_max_batch)
    cfg.parameters[voice_model.LOCKSTEP_PARAMETER].string_value = str(profile.lockstep_rows)
    cfg.parameters[voice_model.COMPUTE_SLOTS_PARAMETER].string_value = str(profile.compute_slots)
    cfg.parameters[voice_model.ADMISSION_HEADROOM_PARAMETER].string_value = repr(profile.admission_headroom)
    cfg.parameters[network_model.THREADS_PARAMETER].string_value = str(profile.intra_op_threads)
    if placement == "voice" and final_root is not None:
        # the networks' ONNX files, relative to the voice model's directory (as network models name theirs)
        model_dir = final_root.resolve() / addon.name
        files = {n: os.path.relpath(addon.network_path(n).resolve(), model_dir) for n in addon.networks}
        cfg.parameters[voice_model.NETWORK_FILES_PARAMETER].string_value = json.dumps(files, sort_keys=True)
    cfg.parameters[voice_model.MAX_STREAMS_PARAMETER].string_value = str(profile.streams_for(addon.name))
    return cfg


def config_text(cfg: Any) -> str:
    from google.protobuf import text_format

    return "# generated by `melstream build-repo`; do not edit\n" + text_format.MessageToString(cfg)


def parse_config(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, _mc().ModelConfig())


def _write_model(root: Path, cfg: Any, backend: str | None) -> None:
    """``cfg``'s model directory under ``root``: its config, and python_backends/``backend``/model.py in its version
    directory (``backend`` None: a native Triton backend's model, whose files its writer adds)."""
    model_dir = root / cfg.name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config_text(cfg))
    if backend is not None:
        shutil.copyfile(BACKENDS_DIR / backend / "model.py", model_dir / "1" / "model.py")


def write_addon_models(addon: Addon, root: Path, profile: Profile, *, final_root: Path) -> list[str]:
    """Write one addon's models under ``root``; network paths are relative to ``final_root``."""
    assert addon.path is not None
    names = []
    for network in addon.networks:
        if profile.network_backend != "python":
            from melstream.serving import native

            # the wire contract is network_config's; native adds what its backend reads, and the model's files
            cfg = native.network_config(network_config(addon, network, profile, network_file=native.ONNX_FILE),
                                        addon, network, profile, final_root=final_root)
            _write_model(root, cfg, None)
            native.write_network_files(addon, network, profile, model_dir=root / cfg.name)
            names.append(cfg.name)
            continue
        model_dir = final_root.resolve() / network_model_name(addon.name, network)
        rel = os.path.relpath(addon.network_path(network).resolve(), model_dir)
        cfg = network_config(addon, network, profile, network_file=rel)
        spec = addon.networks[network]
        if profile.fixed_shapes and spec.buckets:
            static = {b: static_file_name(network, b) for b in spec.buckets}
            cfg.parameters[network_model.STATIC_FILES_PARAMETER].string_value = json.dumps(static, sort_keys=True)
        _write_model(root, cfg, "network")
        if profile.fixed_shapes and spec.buckets:
            check_fixed(spec)
            for bucket, model in frozen_bytes(str(addon.network_path(network)), spec).items():
                (root / cfg.name / "1" / static_file_name(network, bucket)).write_bytes(model)
        names.append(cfg.name)
    cfg = pipeline_config(addon, profile, final_root=final_root)
    _write_model(root, cfg, "pipeline")
    return [cfg.name, *names]


@dataclass
class BuildReport:
    models: list[str]
    voices: list[str]
    refused: dict[str, str]  # addon directory -> error message


def parse_max_streams(values: Iterable[str]) -> dict[str | None, int]:
    """``--max-streams`` values (``N`` for every voice, ``VOICE=N`` for one) as ``{None or voice: N}``; a later
    value for the same key wins.  A value that is not of that form, or N < 1, raises :class:`MelstreamError`."""
    limits: dict[str | None, int] = {}
    for value in values:
        voice, _, number = value.rpartition("=")
        try:
            streams = int(number)
        except ValueError:
            streams = 0
        if streams < 1 or (voice == "" and "=" in value):
            raise MelstreamError(f"max streams must be N or VOICE=N with N >= 1, got {value!r}")
        limits[voice or None] = streams
    return limits


def with_max_streams(profile: Profile, limits: Mapping[str | None, int]) -> Profile:
    """``profile`` with its admission limits overridden: ``limits[None]`` for every voice (the profile's
    per-voice figures included), ``limits[voice]`` for one."""
    for key, streams in limits.items():
        if streams < 1:
            raise MelstreamError(f"max streams of {'every voice' if key is None else repr(key)} must be >= 1, got {streams}")
    per_voice = {} if None in limits else dict(profile.voice_max_streams)
    per_voice.update({k: v for k, v in limits.items() if k is not None})
    return dataclasses.replace(profile, max_streams=limits.get(None, profile.max_streams), voice_max_streams=per_voice)


def build_repository(addons_dir: str | Path = "addons", out: str | Path = "model_repository", *,
                     profile: str = "cpu", network_instances: int | None = None,
                     max_streams: Mapping[str | None, int] | None = None, placement: str | None = None,
                     batch_wait_us: int | None = None, lockstep_rows: int | None = None,
                     compute_slots: int | None = None) -> BuildReport:
    """(Re)write ``out`` from every addon under ``addons_dir``.

    An addon that fails validation is refused (its error kept in the report) and the others are
    still written, so one broken addon never takes the service down.  ``network_instances``
    overrides the profile's instances per network model (about one per core suits CPU hosts).
    ``max_streams`` overrides the streams a voice admits at once (:func:`with_max_streams`: key None for
    every voice, a voice's name for one; a name that is no addon's is refused).  ``placement`` and
    ``batch_wait_us`` override the profile's network placement ("triton" or "voice") and cross-stream batching;
    ``lockstep_rows`` and ``compute_slots`` its lockstep steps and listener-first slots (0: off).
    """
    prof = get_profile(profile)
    if placement is not None:
        if placement not in PLACEMENTS:
            raise MelstreamError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        prof = dataclasses.replace(prof, network_placement=placement, voice_placement={})
    if batch_wait_us is not None:
        if batch_wait_us < 0:
            raise MelstreamError(f"batch wait must be >= 0 microseconds, got {batch_wait_us}")
        prof = dataclasses.replace(prof, batch_wait_us=batch_wait_us)
    for name, value in (("lockstep_rows", lockstep_rows), ("compute_slots", compute_slots)):
        if value is not None and value < 0:
            raise MelstreamError(f"{name} must be >= 0, got {value}")
    if lockstep_rows is not None:
        prof = dataclasses.replace(prof, lockstep_rows=lockstep_rows)
    if compute_slots is not None:
        prof = dataclasses.replace(prof, compute_slots=compute_slots)
    if network_instances is not None:
        if network_instances < 1:
            raise MelstreamError(f"network_instances must be >= 1, got {network_instances}")
        prof = dataclasses.replace(prof, network_instances=network_instances)
    if max_streams:
        prof = with_max_streams(prof, max_streams)
    out = Path(out)
    report = BuildReport([], [], {})
    addons: list[Addon] = []
    for d in discover_addons(addons_dir):
        try:
            addons.append(load_addon(d))
        except AddonError as e:
            report.refused[str(d)] = str(e)
    names = [a.name for a in addons]
    dupes = {n for n in names if names.count(n) > 1}
    for a in [a for a in addons if a.name in dupes]:
        report.refused[str(a.path)] = f"{a.source}: name: {a.name!r} is used by more than one addon"
    addons = [a for a in addons if a.name not in dupes]
    unknown = sorted(k for k in (max_streams or {}) if k is not None and k not in names)
    if unknown:
        raise MelstreamError(f"max streams name voices that no addon under {addons_dir} has: {', '.join(unknown)}; "
                             f"voices: {', '.join(sorted(names)) or 'none'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        for a in addons:
            report.models += write_addon_models(a, tmp, prof, final_root=out)
            report.voices.append(a.name)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
