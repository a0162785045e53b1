from __future__ import annotations

import filecmp
import json
import re
import shutil
from pathlib import Path

import pytest

from melstream.addon import Addon
from melstream.cli import main
from melstream.errors import MelstreamError
from melstream.serving.repo import (
    PROFILES,
    build_repository,
    config_text,
    get_profile,
    network_config,
    parse_config,
    parse_max_streams,
    pipeline_config,
    with_max_streams,
)
from melstream.serving.voice_model import MAX_STREAMS_PARAMETER
from tests import synthetic

PYTHON_BACKENDS = Path(__file__).resolve().parents[2] / "python_backends"


VOICES = [synthetic.FAST, synthetic.TACO]


@pytest.fixture
def workdir(tmp_path: Path, synthetic_addons: Path) -> Path:
    """A copy of the (synthetic) addons laid out as in the checkout, so relative network paths match."""
    shutil.copytree(synthetic_addons, tmp_path / "addons")
    return tmp_path


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_every_profile_writes_a_repository_of_every_voice(workdir: Path, profile_name: str) -> None:
    profile = get_profile(profile_name)
    assert profile.name == profile_name  # the name a profile reports is the one it is chosen by
    report = build_repository(workdir / "addons", workdir / "repo", profile=profile_name)
    assert report.voices == VOICES and not report.refused
    for voice in VOICES:
        cfg = parse_config((workdir / "repo" / voice / "config.pbtxt").read_text())
        assert cfg.name == voice and cfg.model_transaction_policy.decoupled
        data = json.loads(cfg.parameters["addon_json"].string_value)
        assert data == json.loads((workdir / "addons" / voice / "addon.json").read_text())
        for network in data["networks"]:
            net_cfg = parse_config((workdir / "repo" / f"{voice}__{network}" / "config.pbtxt").read_text())
            assert net_cfg.name == f"{voice}__{network}"
            if profile.network_backend != "python":  # a native backend's model: the ONNX (tests/unit/test_native.py)
                assert (workdir / "repo" / f"{voice}__{network}" / "1" / "model.onnx").is_file()
                continue
            assert filecmp.cmp(workdir / "repo" / f"{voice}__{network}" / "1" / "model.py", PYTHON_BACKENDS / "network" / "model.py",
                               shallow=False)
        assert filecmp.cmp(workdir / "repo" / voice / "1" / "model.py", PYTHON_BACKENDS / "pipeline" / "model.py", shallow=False)


@pytest.mark.parametrize("profile_name", ["cpu", "gpu"])
@pytest.mark.parametrize("which", ["pipeline", "network"])
def test_config_round_trip(fast_addon: Addon, which: str, profile_name: str) -> None:
    profile = get_profile(profile_name)
    cfg = pipeline_config(fast_addon, profile) if which == "pipeline" else \
        network_config(fast_addon, "decoder", profile, network_file="../x.onnx")
    assert parse_config(config_text(cfg)) == cfg


def test_pipeline_config_carries_the_addon(fast_addon: Addon) -> None:
    cfg = pipeline_config(fast_addon, get_profile("cpu"))
    assert cfg.model_transaction_policy.decoupled
    assert json.loads(cfg.parameters["addon_json"].string_value) == fast_addon.raw
    assert [i.name for i in cfg.input] == ["TEXT", "PACE", "CHUNK_FRAMES", "FLUSH", "TIMESTAMPS"]
    assert list(cfg.output[0].dims) == [-1, 80]


def test_network_config_batches(fast_addon: Addon) -> None:
    cfg = network_config(fast_addon, "decoder", get_profile("cpu"), network_file="x")
    assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
    # the frames, then the length input (int64 [1] per batch item: how many frames are real)
    assert [list(i.dims) for i in cfg.input] == [[-1, fast_addon.networks["decoder"].inputs[0].shape[-1]], [1]]


def test_unknown_profile() -> None:
    with pytest.raises(MelstreamError, match="unknown profile 'tpu'; known: cpu, cpu-bls, cpu-static, gpu, gpu-ort-trt, gpu-trt$"):
        get_profile("tpu")


def test_gpu_profile_puts_networks_on_the_gpu_and_voices_on_the_cpu(workdir: Path) -> None:
    report = build_repository(workdir / "addons", workdir / "gpu_repository", profile="gpu")
    assert report.voices == VOICES and not report.refused
    configs = {name: parse_config((workdir / "gpu_repository" / name / "config.pbtxt").read_text()) for name in report.models}
    kind = {name: [g.kind for g in cfg.instance_group] for name, cfg in configs.items()}
    mc = type(configs[synthetic.FAST].instance_group[0])
    assert kind == {name: [mc.KIND_CPU] if name in report.voices else [mc.KIND_GPU] for name in report.models}
    for name, cfg in configs.items():
        providers = cfg.parameters["ort_providers"].string_value if "ort_providers" in cfg.parameters else None
        assert providers == (None if name in report.voices else "CUDAExecutionProvider,CPUExecutionProvider"), name
    # everything else (tensors, batching, ONNX paths, the addon JSON) is the repository of cpu-bls (networks through
    # Triton, as on the GPU) stepping streams in lockstep as the GPU profile does
    build_repository(workdir / "addons", workdir / "model_repository", profile="cpu-bls",
                     lockstep_rows=get_profile("gpu").lockstep_rows)
    for name, cfg in configs.items():
        assert cfg.instance_group[0].count == 1, name  # per GPU
        cfg.instance_group[0].kind = mc.KIND_CPU
        if name not in report.voices:
            cfg.instance_group[0].count = get_profile("cpu-bls").network_instances
        if "ort_providers" in cfg.parameters:
            del cfg.parameters["ort_providers"]
        assert cfg == parse_config((workdir / "model_repository" / name / "config.pbtxt").read_text()), name


def test_cpu_profile_writes_no_provider_parameter(fast_addon: Addon) -> None:
    cfg = network_config(fast_addon, "decoder", get_profile("cpu"), network_file="x")
    assert "ort_providers" not in cfg.parameters and cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU


def test_build_repo_refuses_a_broken_addon_and_writes_the_others(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workdir / "addons" / synthetic.TACO / "addon.json"
    data = json.loads(cfg.read_text())
    data["stack"][0]["type"] = "AttentionDecodr"
    cfg.write_text(json.dumps(data))
    code = main(["build-repo", "--addons", str(workdir / "addons"), "--out", str(workdir / "repo")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"refused addon {workdir / 'addons' / synthetic.TACO}" in err
    assert 'stack[0]: unknown type "AttentionDecodr"' in err
    fast = synthetic.FAST
    assert sorted(p.name for p in (workdir / "repo").iterdir()) == [fast, f"{fast}__decoder", f"{fast}__duration_predictor",
                                                                   f"{fast}__text_encoder"]


def test_duplicate_addon_names_are_refused(workdir: Path) -> None:
    shutil.copytree(workdir / "addons" / synthetic.FAST, workdir / "addons" / "copy-of-the-fast-voice")
    report = build_repository(workdir / "addons", workdir / "repo")
    assert report.voices == [synthetic.TACO]
    assert all("used by more than one addon" in m for m in report.refused.values()) and len(report.refused) == 2


def test_describe_prints_the_block_tree(capsys: pytest.CaptureFixture[str], fast_addon: Addon) -> None:
    assert main(["describe", str(fast_addon.path)]) == 0
    out = capsys.readouterr().out
    dim = fast_addon.networks["decoder"].inputs[0].shape[-1]
    ctx = max(fast_addon.networks[n].options["context_tokens"] for n in ("text_encoder", "duration_predictor"))
    assert (f"network decoder (decoder, decoder.onnx): upsampled float32[-1, {dim}], length int64[1] -> mel float32[-1, 80]; "
            f"buckets {', '.join(map(str, fast_addon.networks['decoder'].buckets))}") in out
    assert "StreamablePipeline (StreamableBlock)\n  SequenceBlockContainer (SequenceBlock)\n  StreamableStack" in out
    assert f"    SegmentedPipeline (StreamableBlock, first_segment_tokens=16, segment_tokens=96, context_tokens={ctx})\n" \
           "      Encoders (SequenceBlock)\n" in out


def test_describe_a_broken_addon_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_network_instances_come_from_the_profile_or_the_command_line(workdir: Path) -> None:
    def counts(repo: Path) -> dict[str, int]:
        return {p.parent.name: parse_config(p.read_text()).instance_group[0].count for p in sorted(repo.glob("*/config.pbtxt"))}

    build_repository(workdir / "addons", workdir / "default")
    assert set(counts(workdir / "default").values()) == {1, 2}  # voices: 1 (threads inside), networks: the cpu profile's 2
    assert main(["build-repo", "--addons", str(workdir / "addons"), "--out", str(workdir / "four"), "--network-instances", "4"]) == 0
    assert {n: c for n, c in counts(workdir / "four").items() if "__" in n} == {n: 4 for n in counts(workdir / "default") if "__" in n}
    assert {n: c for n, c in counts(workdir / "four").items() if "__" not in n} == dict.fromkeys(VOICES, 1)
    with pytest.raises(MelstreamError, match="network_instances must be >= 1, got 0"):
        build_repository(workdir / "addons", workdir / "none", network_instances=0)


def test_every_network_instance_warms_up_on_zeros_of_a_fixed_shape(fast_addon: Addon, taco_addon: Addon) -> None:
    # a warm-up that does not fit the network would fail the model's load, which the integration tests would see
    for addon in (fast_addon, taco_addon):
        for network, spec in addon.networks.items():
            cfg = network_config(addon, network, get_profile("cpu"), network_file="x")
            [warm] = cfg.model_warmup
            assert warm.batch_size == 1 and sorted(warm.inputs) == sorted(t.name for t in spec.all_inputs()), network
            for t in spec.all_inputs():
                inp = warm.inputs[t.name]
                assert inp.zero_data and inp.data_type == next(i.data_type for i in cfg.input if i.name == t.name)
                assert len(inp.dims) == len(cfg.input[[i.name for i in cfg.input].index(t.name)].dims) and min(inp.dims) > 0


def test_a_fixed_shape_profile_warms_every_bucket_up(fast_addon: Addon, taco_addon: Addon) -> None:
    for addon in (fast_addon, taco_addon):
        for network, spec in addon.networks.items():
            cfg = network_config(addon, network, get_profile("cpu-static"), network_file="x")
            assert [w.name for w in cfg.model_warmup] == [f"zeros-{b}" for b in spec.buckets], network
            for warm, bucket in zip(cfg.model_warmup, spec.buckets, strict=True):
                for t in spec.all_inputs():
                    assert list(warm.inputs[t.name].dims) == [bucket if d == -1 else d for d in t.shape], (network, t.name)


# --- admission and bounded queues -------------------------------------------------------------------------

def _limits(repo: Path) -> dict[str, int]:
    """Each voice's admitted streams and each network's queue size, as written in ``repo``."""
    out = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = parse_config(path.read_text())
        if "__" in cfg.name:
            out[cfg.name] = cfg.dynamic_batching.default_queue_policy.max_queue_size
        else:
            out[cfg.name] = int(cfg.parameters[MAX_STREAMS_PARAMETER].string_value)
    return out


def test_the_shipped_voices_admit_what_the_benchmarks_measured() -> None:
    for name, fast, taco in (("cpu", 64, 64), ("cpu-bls", 32, 16), ("gpu", 32, 16)):
        profile = get_profile(name)
        assert profile.streams_for("fastvoice") == fast and profile.streams_for("tacovoice") == taco, name
        assert profile.streams_for("anyvoice") == profile.max_streams == 16


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_network_queues_are_bounded_above_what_the_voice_admits(taco_addon: Addon, profile_name: str) -> None:
    profile = get_profile(profile_name)
    for network in taco_addon.networks:
        cfg = network_config(taco_addon, network, profile, network_file="x")
        policy = cfg.dynamic_batching.default_queue_policy
        admitted = profile.streams_for(taco_addon.name)
        # each admitted stream has at most one call to a network waiting: the voice's own streams never fill it
        assert policy.max_queue_size == profile.queue_per_stream * admitted >= admitted > 0
        assert policy.timeout_action == policy.REJECT and policy.default_timeout_microseconds == profile.queue_timeout_us > 0
        assert not policy.allow_timeout_override
        assert parse_config(config_text(cfg)) == cfg


def test_max_streams_from_the_command_line_for_every_voice_or_one(workdir: Path) -> None:
    build_repository(workdir / "addons", workdir / "default")
    default = _limits(workdir / "default")
    cpu = get_profile("cpu")
    assert default[synthetic.FAST] == default[synthetic.TACO] == cpu.max_streams  # synthetic voices are not measured
    assert default[f"{synthetic.TACO}__decoder_step"] == cpu.queue_per_stream * cpu.max_streams
    args = ["build-repo", "--addons", str(workdir / "addons")]
    assert main([*args, "--out", str(workdir / "two"), "--max-streams", "2"]) == 0
    two = _limits(workdir / "two")
    assert two[synthetic.FAST] == two[synthetic.TACO] == 2 and two[f"{synthetic.TACO}__encoder"] == 2 * cpu.queue_per_stream
    assert main([*args, "--out", str(workdir / "mixed"), "--max-streams", "3", "--max-streams", f"{synthetic.TACO}=5"]) == 0
    mixed = _limits(workdir / "mixed")
    assert (mixed[synthetic.FAST], mixed[synthetic.TACO], mixed[f"{synthetic.TACO}__encoder"]) == (3, 5, 5 * cpu.queue_per_stream)


def test_the_measured_limits_give_way_to_an_override_for_every_voice() -> None:
    cpu = get_profile("cpu")
    assert with_max_streams(cpu, {None: 4}).streams_for("fastvoice") == 4
    assert with_max_streams(cpu, {None: 4, "tacovoice": 2}).streams_for("tacovoice") == 2
    one = with_max_streams(cpu, {"tacovoice": 2})
    assert (one.streams_for("tacovoice"), one.streams_for("fastvoice"), one.streams_for("other")) == (2, 64, 16)
    assert cpu.streams_for("tacovoice") == 64  # the profile itself is untouched


@pytest.mark.parametrize("values, message", [
    (["0"], "max streams must be N or VOICE=N with N >= 1, got '0'"),
    (["x=-1"], "got 'x=-1'"),
    (["many"], "got 'many'"),
    (["=4"], "got '=4'"),
])
def test_bad_max_streams_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(MelstreamError, match=re.escape(message)):
        parse_max_streams(values)


def test_max_streams_for_a_voice_no_addon_has_is_refused(workdir: Path) -> None:
    with pytest.raises(MelstreamError, match=f"max streams name voices that no addon under .* has: tacovoic; voices: "
                                             f"{synthetic.FAST}, {synthetic.TACO}"):
        build_repository(workdir / "addons", workdir / "repo", max_streams={"tacovoic": 2})
    assert not (workdir / "repo").exists()
    assert parse_max_streams(["4", "a=2", "a=3"]) == {None: 4, "a": 3}


def test_scheduling_overrides_are_written_and_negative_ones_refused(workdir: Path) -> None:
    out = workdir / "scheduled"
    build_repository(workdir / "addons", out, profile="cpu-bls", lockstep_rows=4, compute_slots=3, batch_wait_us=0)
    cfg = parse_config((out / synthetic.TACO / "config.pbtxt").read_text())
    assert cfg.parameters["lockstep_rows"].string_value == "4" and cfg.parameters["compute_slots"].string_value == "3"
    assert get_profile("cpu-bls").lockstep_rows == 0  # the profile itself is untouched
    for option, message in (({"lockstep_rows": -1}, "lockstep_rows must be >= 0, got -1"),
                            ({"compute_slots": -2}, "compute_slots must be >= 0, got -2"),
                            ({"batch_wait_us": -1}, "batch wait must be >= 0 microseconds, got -1")):
        with pytest.raises(MelstreamError, match=message):
            build_repository(workdir / "addons", workdir / "refused", profile="cpu", **option)
