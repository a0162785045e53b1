"""benchmarks/peer_fastapi.py: the FastAPI peer speaks melstream's HTTP wire, so melstream's own HttpClient measures
it; its frames are the same blocks' frames, and its errors reach that client typed."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.peer_fastapi import start_peer
from melstream.addon import load_addon
from melstream.errors import InvalidInputError, UnknownVoiceError
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream_client import HttpClient, wire
from tests.conftest import ROOT

ADDONS = ROOT / "addons"
SENTENCE = next(line.strip() for line in (ROOT / "tests" / "data" / "heldout_sentences.txt").read_text().splitlines() if line.strip())
#: fastvoice's frames equal in-process to float rounding; tacovoice's autoregressive loop feeds each frame back, so
#: rounding differences (JSON carries every float32 exactly; the order of ONNX Runtime's sums may differ) can grow a little
ATOL = {"fastvoice": 1e-4, "tacovoice": 1e-3}


@pytest.fixture(scope="module")
def peer_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_peer(ADDONS, log_file=tmp_path_factory.mktemp("peer") / "peer_fastapi.log", timeout_s=120) as peer:
        yield peer.url


@pytest.fixture(scope="module")
def client(peer_url: str) -> HttpClient:
    return HttpClient(peer_url, timeout_s=60)


def test_the_peer_lists_the_shipped_voices_with_their_addons(client: HttpClient) -> None:
    assert client.voices() == ["fastvoice", "tacovoice"]
    for voice in ("fastvoice", "tacovoice"):
        assert client.spec(voice).to_json() == load_addon(ADDONS / voice).to_json()
        assert client.is_model_ready(wire.network_model_name(voice, next(iter(client.spec(voice).networks))))


@pytest.mark.parametrize("voice", ["fastvoice", "tacovoice"])
def test_streamed_frames_equal_the_same_pipeline_in_process(client: HttpClient, voice: str) -> None:
    chunks = list(client.stream(SENTENCE, voice=voice))
    served = np.concatenate(chunks, axis=0)
    local = load_addon(ADDONS / voice).build(OnnxRuntimeRunner(threads=1)).synthesize(SENTENCE)
    assert len(chunks) > 1, "streamed as chunks, not the whole utterance at once"
    assert served.shape == local.shape and served.dtype == np.float32
    np.testing.assert_allclose(served, local, rtol=0, atol=ATOL[voice])
    # the naive call (CHUNK_FRAMES=0): one chunk, the same frames
    whole = list(client.stream(SENTENCE, voice=voice, chunk_frames=0))
    assert len(whole) == 1 and whole[0].shape == local.shape


@pytest.mark.parametrize(("options", "names"), [
    ({"text": ""}, wire.TEXT.name),  # refused by the front end once the stream runs: an error event after the 200
    ({"text": "Hello.", "chunk_frames": -1}, wire.CHUNK_FRAMES.name),  # refused before the stream: HTTP 400
    ({"text": "Hello.", "pace": 9.0}, wire.PACE.name),
])
def test_a_bad_input_is_an_invalid_input_error_naming_it(client: HttpClient, options: dict[str, object], names: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"\[INVALID_ARG\] input {names}"):
        client.synthesize(voice="fastvoice", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [b"not json", json.dumps({"TEXT": "Hello.", "SPEED": 2}).encode(),
                                  json.dumps({"TEXT": 5}).encode(), json.dumps({"TEXT": "Hello.", "CHUNK_FRAMES": "8"}).encode()])
def test_a_malformed_request_is_refused_with_triton_s_400(peer_url: str, body: bytes) -> None:
    host, _, port = peer_url.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", wire.generate_stream_path("fastvoice"), body=body, headers=wire.GENERATE_STREAM_HEADERS)
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 400
    assert wire.error_code(wire.http_error_message(status, data), http_status=status) == wire.INPUT_ERROR


def test_an_unknown_voice_is_an_unknown_voice_error(client: HttpClient) -> None:
    with pytest.raises(UnknownVoiceError, match="no-such-voice"):
        client.synthesize("Hello.", voice="no-such-voice")
    assert not client.is_model_ready("no-such-voice")


def test_start_peer_stops_its_process(tmp_path: Path) -> None:
    with start_peer(ADDONS, log_file=tmp_path / "peer.log", timeout_s=120) as peer:
        assert HttpClient(peer.url, timeout_s=30).voices() == ["fastvoice", "tacovoice"]
    assert peer.process.poll() is not None


def test_a_peer_that_cannot_start_fails_at_once_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with status") as e, start_peer(tmp_path / "no-addons", log_file=tmp_path / "peer.log",
                                                                                   timeout_s=120):
        pass
    assert "no-addons" in str(e.value)  # the end of its log says why
