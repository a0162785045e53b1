"""The cpu profile: each voice runs its networks inside its voice model, tacovoice's attention steps every stream
in one call (lockstep), and streams compute listener first (issue 11).

Frames equal the in-process frames, alone and with streams of both voices at once (staggered, one cancelled
mid-stream); the steps were shared (the voice's own calls/runs metrics); a clean stop still ends streams as
shutting down (a voice that makes no BLS call Triton could refuse asks Triton, melstream.serving.voice_model
SHUTDOWN_PROBE_S).  And the same lockstep through Triton (the GPU profiles' layout, here cpu-bls with lockstep
rows): one BLS request per step carries several streams' rows, and the frames are the same.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melstream.addon import load_addon
from melstream.errors import ServerUnavailableError
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream.serving.repo import build_repository, get_profile, parse_config
from melstream_client import Client
from tests.servers import metric, poll, quiet, scrape, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Hi.", "The attention voice runs its own networks now, one frame at a time, with no round trip.",
         "A longer sentence, with commas, and a question at the end of it: does it stop where it should?"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cpu") / "repo"
    build_repository(ROOT / "addons", out, profile="cpu")
    return out


@pytest.fixture(scope="module")
def references() -> dict[str, object]:
    return {v: load_addon(ROOT / "addons" / v).build(OnnxRuntimeRunner()) for v in ("fastvoice", "tacovoice")}


def test_the_profile_places_every_voice_with_its_networks(repo: Path) -> None:
    profile = get_profile("cpu")
    for voice, network in (("tacovoice", "decoder_step"), ("fastvoice", "decoder")):
        cfg = parse_config((repo / voice / "config.pbtxt").read_text())
        assert cfg.parameters["network_placement"].string_value == profile.placement_for(voice) == "voice"
        assert int(cfg.parameters["lockstep_rows"].string_value) == profile.lockstep_rows > 1
        assert int(cfg.parameters["compute_slots"].string_value) == profile.compute_slots > 0
        assert f"{network}.onnx" in cfg.parameters["network_files"].string_value


def step_counts(srv: Any) -> tuple[float, float]:
    """tacovoice's decoder_step calls and runs so far, from its voice's own metrics (exported as streams end,
    just after their final responses: so once no stream is active)."""
    metrics = quiet(srv, "tacovoice", "fastvoice")
    return tuple(sum(v for k, v in metrics.items() if k.startswith(name) and 'network="decoder_step"' in k and
                     'voice="tacovoice"' in k) for name in ("melstream_network_calls_total", "melstream_network_runs_total"))


def streams_at_once(url: str, references: dict[str, Any], *, cancel: int | None = None) -> None:
    """Eight streams of both voices started at staggered moments; each equals the in-process frames (stream
    ``cancel`` is left after its first chunk, mid-batch, and the others go on)."""
    jobs = [("tacovoice" if i % 4 else "fastvoice", TEXTS[i % 3]) for i in range(8)]
    results: list[Any] = [None] * len(jobs)

    def stream(i: int) -> None:
        voice, text = jobs[i]
        with Client(url, timeout_s=120) as c:
            if i == cancel:
                for chunk in c.stream(text, voice=voice):
                    results[i] = chunk
                    break  # the listener leaves: the stream is cancelled mid-utterance
                return
            results[i] = c.synthesize(text, voice=voice)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
        t.join(0.02 * (len(threads) % 3))  # staggered starts (a bounded join, not a wait for anything)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    for i, (voice, text) in enumerate(jobs):
        want = references[voice].synthesize(text)
        if i == cancel:
            np.testing.assert_allclose(results[i], want[:len(results[i])], atol=1e-4)
            continue
        assert len(results[i]) == len(want), (i, voice, text)
        np.testing.assert_allclose(results[i], want, atol=1e-3 if voice == "tacovoice" else 1e-4, err_msg=f"stream {i} {voice}")


def test_lockstep_through_triton_equals_in_process(tmp_path: Path, references: dict[str, Any]) -> None:
    """cpu-bls with lockstep rows: the voices call their network models, one BLS request per step of all streams."""
    repo = tmp_path / "repo"
    build_repository(ROOT / "addons", repo, profile="cpu-bls", lockstep_rows=get_profile("gpu").lockstep_rows)
    srv = start_server(repo, tmp_path / "triton.log")
    try:
        model = "tacovoice__decoder_step"
        items, executions = metric(srv, "nv_inference_count", model), metric(srv, "nv_inference_exec_count", model)
        streams_at_once(srv.grpc_url, references, cancel=5)
        items = metric(srv, "nv_inference_count", model) - items
        executions = metric(srv, "nv_inference_exec_count", model) - executions
        # a request carried several streams' steps (Triton's own batching of one-stream requests gives ~1.01)
        assert items / executions > 1.1, (items, executions)
    finally:
        srv.stop()


def test_frames_equal_in_process_alone_and_together_and_a_stop_ends_streams_as_shutting_down(
        repo: Path, tmp_path: Path, references: dict[str, Any]) -> None:
    srv = start_server(repo, tmp_path / "triton.log")
    try:
        with Client(srv.grpc_url, timeout_s=120) as client:
            for voice in ("tacovoice", "fastvoice"):
                for text in TEXTS:
                    np.testing.assert_allclose(client.synthesize(text, voice=voice), references[voice].synthesize(text),
                                               atol=1e-4, err_msg=f"{voice}: {text}")
        calls, runs = step_counts(srv)
        streams_at_once(srv.grpc_url, references, cancel=3)
        calls_after, runs_after = step_counts(srv)
        calls, runs = calls_after - calls, runs_after - runs
        # steps of several streams shared a run (each stream stepping alone makes exactly one run per call; how
        # many share depends on how the staggered streams overlap, and on a loaded machine that is less)
        assert runs > 0 and calls > runs, (calls, runs)

        error: list[BaseException] = []

        def long_stream() -> None:
            try:
                with Client(srv.grpc_url, timeout_s=120) as c:
                    for _ in c.stream("The quick brown fox jumps over the lazy dog. " * 100, voice="tacovoice"):
                        pass
            except BaseException as e:  # noqa: BLE001 - the test looks at it
                error.append(e)

        t = threading.Thread(target=long_stream)
        t.start()
        active = 'melstream_active_streams{voice="tacovoice"}'
        assert poll(lambda: scrape(srv), lambda s: s.get(active, 0.0) >= 1, timeout_s=30).get(active, 0.0) >= 1
        report = srv.stop()
        t.join(30)
        assert report.returncode == 0 and not report.killed and report.seconds < 10, report
        assert error and isinstance(error[0], ServerUnavailableError) and "is shutting down" in str(error[0]), error
    finally:
        srv.stop()
