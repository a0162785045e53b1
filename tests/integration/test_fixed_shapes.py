"""The cpu-static profile gives what the cpu profile gives (issue 10): in-process, and served.

cpu-static runs every network only at its buckets' sizes, from one frozen ONNX per bucket with no variable
axis but the batch; the integration layer pads, splits and crops (melstream.runners.fixed) and the attention
decoder windows a memory longer than its largest bucket.  Here both shipped voices are compared with the
dynamic cpu profile at token lengths 1 and bucket-1, bucket, bucket+1 for every bucket of every network,
longer than the largest, and a text of more than 20,000 frames: fastvoice within 1e-4; tacovoice the same
number of frames (its stop step) and within 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from melstream.addon import Addon, load_addon
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream.runners.static_onnx import dynamic_tensors, static_file_name
from melstream.serving.repo import build_repository, parse_config
from melstream.serving.server import TritonServer
from melstream_client import Client
from tests.servers import start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VOICES = ("fastvoice", "tacovoice")
TOLERANCE = {"fastvoice": 1e-4, "tacovoice": 1e-3}
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest. "
# well over 20,000 frames on both voices (fastvoice makes ~5 frames a token, tacovoice ~6)
LONG_TEXT = SENTENCE * 52


def lengths(addon: Addon) -> list[int]:
    """1, and bucket-1, bucket, bucket+1 of every bucket of every network, and past the largest."""
    sizes = {1}
    for spec in addon.networks.values():
        sizes |= {s for b in spec.buckets for s in (b - 1, b, b + 1)}
    return sorted(sizes | {max(sizes) + 200})


def tokens_of_length(addon: Addon, pipeline, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A real phoneme sequence of exactly ``n`` tokens: the start of a long text's, ended by its end symbol (one
    token: a vowel alone, which both voices speak for a few frames)."""
    tokens = pipeline.inputs_for(SENTENCE * (1 + n // 60))["tokens"]
    assert len(tokens) > n
    if n == 1:
        symbols = addon.text["symbols"]
        first_vowel = next(i for i, t in enumerate(tokens) if symbols[t].startswith("'"))
        return tokens[first_vowel:first_vowel + 1]
    return np.concatenate([tokens[:n - 1], tokens[-1:]]).astype(tokens.dtype)


def frames(pipeline, tokens: np.ndarray, **options: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    context = {"tokens": tokens, **{k: np.array(v, np.int64) for k, v in options.items()}}
    chunks = [c[pipeline.output] for c in pipeline.generate(context) if len(c[pipeline.output])]
    return np.concatenate(chunks) if chunks else np.zeros((0, pipeline.n_mels), np.float32)


def assert_same(voice: str, dynamic: np.ndarray, static: np.ndarray, what: str) -> None:
    assert len(static) == len(dynamic), f"{voice} {what}: {len(static)} frames at fixed shapes, {len(dynamic)} dynamic"
    assert len(dynamic) > 0, f"{voice} {what}: no frames"
    error = float(np.abs(static - dynamic).max())
    assert error <= TOLERANCE[voice], f"{voice} {what}: max difference {error:.2e} > {TOLERANCE[voice]}"


@pytest.fixture(scope="module")
def addons() -> dict[str, Addon]:
    return {v: load_addon(ROOT / "addons" / v) for v in VOICES}


@pytest.fixture(scope="module")
def static_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cpu-static") / "repo"
    report = build_repository(ROOT / "addons", out, profile="cpu-static")
    assert sorted(report.voices) == sorted(VOICES) and not report.refused
    return out


@pytest.fixture(scope="module")
def static_server(static_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    srv = start_server(static_repo, tmp_path_factory.mktemp("triton-static") / "tritonserver.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_every_static_network_has_no_variable_axis_but_the_batch(static_repo: Path, addons: dict[str, Addon]) -> None:
    checked = 0
    for voice, addon in addons.items():
        for network, spec in addon.networks.items():
            model_dir = static_repo / f"{voice}__{network}"
            config = parse_config((model_dir / "config.pbtxt").read_text())
            assert sorted(w.name for w in config.model_warmup) == sorted(f"zeros-{b}" for b in spec.buckets)
            for bucket in spec.buckets:
                model = onnx.load(str(model_dir / "1" / static_file_name(network, bucket)))
                assert dynamic_tensors(model) == {}, f"{voice}.{network} at {bucket}"
                for vi in (*model.graph.input, *model.graph.output):
                    dims = vi.type.tensor_type.shape.dim
                    assert dims[0].dim_param == "batch" and all(d.HasField("dim_value") for d in dims[1:]), vi.name
                    declared = {t.name: t for t in (*spec.all_inputs(), *spec.outputs)}[vi.name]
                    assert [d.dim_value for d in dims[1:]] == [bucket if s == -1 else s for s in declared.shape]
                checked += 1
    assert checked == sum(len(s.buckets) for a in addons.values() for s in a.networks.values()) > 0


@pytest.mark.parametrize("voice", VOICES)
def test_in_process_cpu_static_equals_cpu_at_every_bucket_edge(voice: str, addons: dict[str, Addon]) -> None:
    dynamic = addons[voice].build(OnnxRuntimeRunner())
    static = addons[voice].build(OnnxRuntimeRunner(fixed_shapes=True))
    for n in lengths(addons[voice]):
        tokens = tokens_of_length(addons[voice], dynamic, n)
        assert_same(voice, frames(dynamic, tokens), frames(static, tokens), f"{n} tokens")
    # whole-utterance decodes (one Decoder call past the largest frame bucket: split with context)
    tokens = tokens_of_length(addons[voice], dynamic, 300)
    assert_same(voice, frames(dynamic, tokens, chunk_frames=0), frames(static, tokens, chunk_frames=0), "whole utterance")


@pytest.mark.parametrize("voice", VOICES)
def test_in_process_cpu_static_equals_cpu_on_a_20000_frame_text(voice: str, addons: dict[str, Addon]) -> None:
    dynamic = addons[voice].build(OnnxRuntimeRunner()).synthesize(LONG_TEXT)
    static = addons[voice].build(OnnxRuntimeRunner(fixed_shapes=True)).synthesize(LONG_TEXT)
    assert len(dynamic) > 20_000
    assert_same(voice, dynamic, static, f"{len(LONG_TEXT)} characters")


@pytest.mark.parametrize("voice", VOICES)
def test_served_cpu_static_networks_equal_cpu_at_every_bucket_edge(voice: str, addons: dict[str, Addon],
                                                                   static_server: TritonServer) -> None:
    """The client rebuilds the voice's stack with the server's network models, at the server's fixed shapes."""
    dynamic = addons[voice].build(OnnxRuntimeRunner())
    with Client(static_server.grpc_url, timeout_s=120) as client:
        remote = client.remote_pipeline(voice)
        for n in lengths(addons[voice]):
            tokens = tokens_of_length(addons[voice], dynamic, n)
            assert_same(voice, frames(dynamic, tokens), frames(remote, tokens), f"{n} tokens, remote pipeline")


@pytest.mark.parametrize("voice", VOICES)
def test_served_cpu_static_voice_equals_cpu(voice: str, addons: dict[str, Addon], static_server: TritonServer) -> None:
    """The served voice model (BLS to the fixed-shape network models) against the in-process cpu profile:
    short, medium, past tacovoice's largest memory bucket, and a 20,000-frame text, streamed and whole."""
    dynamic = addons[voice].build(OnnxRuntimeRunner())
    texts = ["Hi.", SENTENCE, SENTENCE * 8, LONG_TEXT]
    with Client(static_server.grpc_url, timeout_s=300) as client:
        for text in texts:
            assert_same(voice, dynamic.synthesize(text), client.synthesize(text, voice=voice), f"{len(text)} characters")
        assert_same(voice, dynamic.synthesize(SENTENCE * 3, chunk_frames=0),
                    client.synthesize(SENTENCE * 3, voice=voice, chunk_frames=0), "whole utterance")
