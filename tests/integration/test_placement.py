"""The cpu-inproc profile: tacovoice runs its networks inside its voice model (issue 11, placement).

Its frames are the in-process cpu frames, alone and with streams at once; a clean stop still ends its streams
as shutting down (it makes no BLS call Triton could refuse, so it asks Triton, melstream.serving.voice_model
SHUTDOWN_PROBE_S); and fastvoice, placed as on cpu, is unaffected.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from melstream.addon import load_addon
from melstream.client import Client
from melstream.errors import ServerUnavailableError
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream.serving.repo import build_repository, get_profile, parse_config
from tests.servers import poll, scrape, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Hi.", "The attention voice runs its own networks now, one frame at a time, with no round trip.",
         "A longer sentence, with commas, and a question at the end of it: does it stop where it should?"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cpu-inproc") / "repo"
    build_repository(ROOT / "addons", out, profile="cpu-inproc")
    return out


def test_the_profile_places_tacovoice_with_its_networks(repo: Path) -> None:
    profile = get_profile("cpu-inproc")
    for voice in ("tacovoice", "fastvoice"):
        cfg = parse_config((repo / voice / "config.pbtxt").read_text())
        assert cfg.parameters["network_placement"].string_value == profile.placement_for(voice)
    assert profile.placement_for("tacovoice") == "voice" and profile.placement_for("fastvoice") == "triton"
    files = parse_config((repo / "tacovoice" / "config.pbtxt").read_text()).parameters["network_files"].string_value
    assert "decoder_step.onnx" in files and "encoder.onnx" in files


def test_frames_equal_in_process_alone_and_together_and_a_stop_ends_streams_as_shutting_down(repo: Path, tmp_path: Path) -> None:
    reference = load_addon(ROOT / "addons" / "tacovoice").build(OnnxRuntimeRunner())
    srv = start_server(repo, tmp_path / "triton.log")
    try:
        with Client(srv.grpc_url, timeout_s=120) as client:
            for text in TEXTS:
                np.testing.assert_allclose(client.synthesize(text, voice="tacovoice"), reference.synthesize(text), atol=1e-4)
            fast = load_addon(ROOT / "addons" / "fastvoice").build(OnnxRuntimeRunner())
            np.testing.assert_allclose(client.synthesize(TEXTS[1], voice="fastvoice"), fast.synthesize(TEXTS[1]), atol=1e-4)
        results: list[object] = [None] * 6

        def stream(i: int) -> None:
            with Client(srv.grpc_url, timeout_s=120) as c:
                results[i] = c.synthesize(TEXTS[i % 3], voice="tacovoice")

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, got in enumerate(results):
            np.testing.assert_allclose(got, reference.synthesize(TEXTS[i % 3]), atol=1e-4, err_msg=f"stream {i}")

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
