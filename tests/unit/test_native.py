"""The native-Triton GPU profiles (gpu-ort-trt, gpu-trt) and `melstream build-plans`, without a GPU: the configs
build-repo writes parse as Triton's ModelConfig with the fields NVIDIA's backends read, and the trtexec commands
build-plans would run are the right ones.  Nothing here runs on a GPU (none has been lent to this project)."""

from __future__ import annotations

import filecmp
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import melstream
from melstream.cli import build_parser, main, prepare_repository
from melstream.errors import AddonError, MelstreamError
from melstream.serving import native, plans
from melstream.serving.repo import build_repository, config_text, get_profile, network_config, parse_config
from melstream_client.spec import TensorSpec
from tests import synthetic

VOICES = [synthetic.FAST, synthetic.TACO]
BUCKETS = [32, 64, 128, 256]  # above twice every synthetic network's context; tinyfast's decoder window fits 256


@pytest.fixture
def bucketed(tmp_path: Path, synthetic_addons: Path) -> Path:
    """A copy of the synthetic addons whose every network declares BUCKETS."""
    shutil.copytree(synthetic_addons, tmp_path / "addons")
    for voice in VOICES:
        path = tmp_path / "addons" / voice / "addon.json"
        data = json.loads(path.read_text())
        for net in data["networks"].values():
            net["buckets"] = BUCKETS
        path.write_text(json.dumps(data))
    return tmp_path / "addons"


def network_models(repo: Path) -> dict[str, Any]:
    """name -> parsed config of every network model (``voice__network``) in ``repo``."""
    return {p.parent.name: parse_config(p.read_text()) for p in sorted(repo.glob("*__*/config.pbtxt"))}


def shapes(spec: str) -> dict[str, list[int]]:
    """``tokens:1x32,length:1x1`` -> {"tokens": [1, 32], "length": [1, 1]}."""
    return {name: [int(d) for d in dims.split("x")] for name, _, dims in (s.partition(":") for s in spec.split(","))}


def expected(addon: melstream.Addon, network: str, bucket: int, batch: int) -> dict[str, list[int]]:
    spec = addon.networks[network]
    return {t.name: [batch, *(bucket if d == -1 else d for d in t.shape)] for t in spec.all_inputs()}


@pytest.mark.parametrize("profile_name", ["gpu-ort-trt", "gpu-trt"])
def test_native_models_keep_the_python_models_wire_contract(bucketed: Path, tmp_path: Path, profile_name: str) -> None:
    profile = get_profile(profile_name)
    report = build_repository(bucketed, tmp_path / "repo", profile=profile_name)
    assert report.voices == VOICES and not report.refused
    models = network_models(tmp_path / "repo")
    assert len(models) == 5
    for name, cfg in models.items():
        voice, network = name.split("__")
        addon = melstream.load_addon(bucketed / voice)
        text = (tmp_path / "repo" / name / "config.pbtxt").read_text()
        assert parse_config(text) == cfg and config_text(cfg) == text  # Triton's ModelConfig, round trip
        assert cfg.name == melstream.wire.network_model_name(voice, network)
        python = network_config(addon, network, profile, network_file="x")  # the Python backend's model
        for field in ("input", "output", "max_batch_size", "dynamic_batching", "model_warmup"):
            assert getattr(cfg, field) == getattr(python, field), (name, field)
        assert not cfg.parameters  # the Python backend's parameters are not a native backend's
        [group] = cfg.instance_group
        assert group.kind == group.KIND_GPU and group.count == profile.network_instances
        # one warm-up per bucket, every variable dim that bucket
        assert [w.name for w in cfg.model_warmup] == [f"zeros-{b}" for b in BUCKETS]
        for warm, bucket in zip(cfg.model_warmup, BUCKETS, strict=True):
            want = expected(addon, network, bucket, 1)
            assert {k: [1, *v.dims] for k, v in warm.inputs.items()} == want and all(v.zero_data for v in warm.inputs.values())
        # the ONNX is in the version directory, no Python model
        version = tmp_path / "repo" / name / "1"
        assert filecmp.cmp(version / "model.onnx", bucketed / voice / addon.networks[network].file, shallow=False)
        assert not (version / "model.py").exists()
    for voice in VOICES:  # the voices stay Python-backend models on the CPU, told the networks run at fixed shapes
        cfg = parse_config((tmp_path / "repo" / voice / "config.pbtxt").read_text())
        assert cfg.backend == "python" and cfg.parameters[melstream.wire.FIXED_SHAPES_PARAMETER].string_value == "true"


def test_gpu_ort_trt_runs_onnxruntime_with_the_tensorrt_accelerator(bucketed: Path, tmp_path: Path) -> None:
    build_repository(bucketed, tmp_path / "repo", profile="gpu-ort-trt")
    for name, cfg in network_models(tmp_path / "repo").items():
        voice, network = name.split("__")
        addon = melstream.load_addon(bucketed / voice)
        assert cfg.backend == "onnxruntime" and not cfg.platform and not cfg.cc_model_filenames
        [accel] = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert accel.name == "tensorrt"
        params = dict(accel.parameters)
        assert params.pop("precision_mode") == "FP32" and params.pop("trt_engine_cache_enable") == "1"
        cache = params.pop("trt_engine_cache_path")
        assert cache == str((tmp_path / "repo").resolve() / name / "trt_cache" / native.machine_key())
        assert Path(cache).is_dir()
        top = addon.networks[network].max_batch_size
        assert shapes(params.pop("trt_profile_min_shapes")) == expected(addon, network, BUCKETS[0], 1)
        assert shapes(params.pop("trt_profile_opt_shapes")) == expected(addon, network, BUCKETS[-1], top)
        assert shapes(params.pop("trt_profile_max_shapes")) == expected(addon, network, BUCKETS[-1], top)
        assert not params  # nothing the r24.10 backend would refuse as an unknown parameter


def test_the_cache_key_names_the_gpu_and_tensorrt_or_says_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    key = native.machine_key()
    assert "/" not in key and " " not in key
    assert ("unknown-gpu" in key) == (shutil.which("nvidia-smi") is None)
    assert "trt" in key


def test_gpu_trt_maps_compute_capabilities_to_plans_and_lists_a_profile_per_bucket(bucketed: Path, tmp_path: Path) -> None:
    build_repository(bucketed, tmp_path / "repo", profile="gpu-trt")
    for cfg in network_models(tmp_path / "repo").values():
        assert cfg.platform == "tensorrt_plan" and cfg.backend == "tensorrt"
        assert dict(cfg.cc_model_filenames) == {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in native.COMPUTE_CAPABILITIES}
        assert {"8.0", "8.6", "8.9", "9.0"} <= set(cfg.cc_model_filenames)
        [group] = cfg.instance_group
        assert list(group.profile) == [str(i) for i in range(len(BUCKETS))]
        assert not cfg.HasField("optimization")


@pytest.mark.parametrize("profile_name", ["gpu-ort-trt", "gpu-trt"])
def test_a_network_without_buckets_is_refused_naming_it(bucketed: Path, tmp_path: Path, profile_name: str) -> None:
    # fixed-shape engines need the sizes they run at: one profile over the whole variable range is not offered
    path = bucketed / synthetic.FAST / "addon.json"
    data = json.loads(path.read_text())
    del data["networks"]["duration_predictor"]["buckets"]
    path.write_text(json.dumps(data))
    with pytest.raises(AddonError, match=r"addon 'tinyfast': network 'duration_predictor' declares no buckets"):
        build_repository(bucketed, tmp_path / "repo", profile=profile_name)
    assert not (tmp_path / "repo").exists()  # nothing half-written
    build_repository(bucketed, tmp_path / "repo", profile="cpu")  # the profiles that run any size still take it


def test_a_length_input_keeps_its_one_element(fast_addon: melstream.Addon) -> None:
    spec = fast_addon.networks["decoder"]
    spec = type(spec)(**{**spec.__dict__, "buckets": (32, 64), "length": TensorSpec("length", "int64", (1,))})
    profile = native.profile_shapes(spec, 64)
    assert profile == {"upsampled": ((1, 64, spec.inputs[0].shape[-1]), (8, 64, spec.inputs[0].shape[-1]), (8, 64, spec.inputs[0].shape[-1])),
                       "length": ((1, 1), (8, 1), (8, 1))}
    assert native.shapes_spec({n: s[0] for n, s in profile.items()}) == f"upsampled:1x64x{spec.inputs[0].shape[-1]},length:1x1"


def _commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def _profiles(cmd: list[str]) -> list[dict[str, dict[str, list[int]]]]:
    """The optimisation profiles of a trtexec command: each ``--profile=N`` and the shape flags behind it."""
    found: list[dict[str, dict[str, list[int]]]] = []
    for word in cmd:
        flag, _, value = word.partition("=")
        if flag == "--profile":
            assert int(value) == len(found)
            found.append({})
        elif flag in ("--minShapes", "--optShapes", "--maxShapes"):
            assert flag not in found[-1], f"{flag} twice in one profile"
            found[-1][flag] = shapes(value)
    return found


def test_build_plans_dry_run_prints_one_trtexec_per_network_and_capability(bucketed: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    build_repository(bucketed, repo, profile="gpu-trt")
    capsys.readouterr()
    assert main(["build-plans", "--repo", str(repo), "--dry-run", "--compute-capability", "8.6",
                 "--compute-capability", "9.0"]) == 0
    commands = _commands(capsys.readouterr().out)
    models = network_models(repo)
    assert len(commands) == len(models) * 2
    seen = set()
    for cmd in commands:
        assert cmd[0] == "trtexec" and "--noTF32" in cmd and "--skipInference" in cmd  # FP32, no TF32: 1e-4 of the CPU
        args = dict(w.split("=", 1) for w in cmd[1:] if w.startswith(("--onnx=", "--saveEngine=")))
        model_dir = Path(args["--onnx"]).parents[1]
        name = model_dir.name
        cc = next(cc for cc, f in models[name].cc_model_filenames.items() if Path(args["--saveEngine"]) == model_dir / "1" / f)
        assert Path(args["--onnx"]) == model_dir / "1" / "model.onnx" and model_dir.parent == repo
        seen.add((name, cc))
        voice, network = name.split("__")
        addon = melstream.load_addon(bucketed / voice)
        top = addon.networks[network].max_batch_size
        profiles = _profiles(cmd)
        assert len(profiles) == len(BUCKETS) == len(models[name].instance_group[0].profile)
        for profile, bucket in zip(profiles, BUCKETS, strict=True):
            assert profile == {"--minShapes": expected(addon, network, bucket, 1),
                               "--optShapes": expected(addon, network, bucket, top),
                               "--maxShapes": expected(addon, network, bucket, top)}
    assert seen == {(name, cc) for name in models for cc in ("8.6", "9.0")}


def test_build_plans_uses_the_gpus_found_here(bucketed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    build_repository(bucketed, tmp_path / "repo", profile="gpu-trt")
    monkeypatch.setattr(plans, "gpus", lambda: [(0, "8.9"), (1, "8.9"), (2, "8.0")])
    jobs = plans.build_plans(tmp_path / "repo", dry_run=True, say=lambda line: None)
    assert sorted({(j.compute_capability, j.device) for j in jobs}) == [("8.0", 2), ("8.9", 0)]  # one plan per type
    assert all(f"--device={j.device}" in plans.trtexec_command(j) for j in jobs)
    monkeypatch.setattr(plans, "gpus", lambda: [])
    with pytest.raises(MelstreamError, match="no NVIDIA GPU found"):
        plans.build_plans(tmp_path / "repo", dry_run=True)


def test_build_plans_refuses_what_is_not_a_gpu_trt_repository(bucketed: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    for profile in ("cpu", "gpu-ort-trt"):
        build_repository(bucketed, tmp_path / profile, profile=profile)
        capsys.readouterr()
        assert main(["build-plans", "--repo", str(tmp_path / profile), "--dry-run", "--compute-capability", "8.6"]) == 2
        assert "not a gpu-trt repository" in capsys.readouterr().err
    assert main(["build-plans", "--repo", str(tmp_path / "nowhere"), "--dry-run"]) == 2
    assert "no model repository" in capsys.readouterr().err


def test_build_plans_refuses_a_capability_the_config_does_not_map(bucketed: Path, tmp_path: Path) -> None:
    build_repository(bucketed, tmp_path / "repo", profile="gpu-trt")
    with pytest.raises(MelstreamError, match=r"compute capability 6\.1 has no plan in cc_model_filenames"):
        plans.build_plans(tmp_path / "repo", compute_capabilities=["6.1"], dry_run=True)


def test_build_plans_without_a_gpu_of_that_type_or_without_tensorrt_says_what_is_missing(
        bucketed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_repository(bucketed, tmp_path / "repo", profile="gpu-trt")
    monkeypatch.setattr(plans, "gpus", lambda: [(0, "8.6")])
    with pytest.raises(MelstreamError, match="no GPU of compute capability 9.0 here"):
        plans.build_plans(tmp_path / "repo", compute_capabilities=["9.0"])
    monkeypatch.setattr(plans, "find_trtexec", lambda: None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt fails
    with pytest.raises(MelstreamError, match="neither trtexec .* nor TensorRT's Python package"):
        plans.build_plans(tmp_path / "repo")
    assert not list((tmp_path / "repo").glob("*/1/*.plan"))


def test_serve_takes_its_profile_from_one_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MELSTREAM_PROFILE", raising=False)
    assert build_parser().parse_args(["serve"]).profile is None  # serve the repository as it is
    monkeypatch.setenv("MELSTREAM_PROFILE", "gpu-trt")
    assert build_parser().parse_args(["serve"]).profile == "gpu-trt"
    assert build_parser().parse_args(["serve", "--profile", "cpu"]).profile == "cpu"


@pytest.mark.parametrize("profile_name", ["gpu-ort-trt", "gpu-trt"])
def test_serve_with_a_profile_writes_the_repository_and_builds_gpu_trt_plans_first(
        bucketed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile_name: str) -> None:
    built = []
    monkeypatch.setattr(plans, "build_plans", lambda repo, **kw: built.append(Path(repo)))
    args = build_parser().parse_args(["serve", "--profile", profile_name, "--addons", str(bucketed),
                                      "--repo", str(tmp_path / "repo")])
    prepare_repository(args)
    assert len(network_models(tmp_path / "repo")) == 5
    assert built == ([tmp_path / "repo"] if profile_name == "gpu-trt" else [])
