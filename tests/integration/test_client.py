"""melstream.client against a real server: typed errors that keep the server's text, specs read from the server."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from melstream.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerUnavailableError,
    UnknownVoiceError,
)
from melstream.serving.server import TritonServer, free_port
from melstream_client import Client, HttpClient
from melstream_client.spec import AddonSpec, read_addon_spec

pytestmark = pytest.mark.integration

VOICES = ["fastvoice", "tacovoice"]
TEXT = "Hello there, from the client tests."
LONG = " ".join(["A long paragraph keeps the server busy for a good while, frame after frame."] * 20)

AnyClient = Client | HttpClient


@pytest.fixture(params=["grpc", "http"])
def make_client(request: pytest.FixtureRequest, server: TritonServer) -> Iterator[Callable[..., AnyClient]]:
    """A factory of the parametrised client kind (``url`` defaults to the test server's)."""
    made: list[AnyClient] = []

    def make(url: str | None = None, *, timeout_s: float = 60.0) -> AnyClient:
        c: AnyClient
        if request.param == "grpc":
            c = Client(url or server.grpc_url, timeout_s=timeout_s)
        else:
            c = HttpClient(url or server.http_url, timeout_s=timeout_s)
        made.append(c)
        return c

    yield make
    for c in made:
        if isinstance(c, Client):
            c.close()


def test_http_error_keeps_tritons_text(server: TritonServer) -> None:
    with pytest.raises(InvalidInputError) as info:
        HttpClient(server.http_url).synthesize("", voice="fastvoice")
    message = str(info.value)
    assert "TextError: text has nothing to speak" in message and "fastvoice" in message, message
    assert "HTTP 400" not in message, message


@pytest.mark.parametrize("voice", ["nosuchvoice", "fastvoice__decoder"])
def test_unknown_voice(make_client: Callable[..., AnyClient], voice: str) -> None:
    """A voice the server does not serve: a model that does not exist, or one that is no voice (a network model)."""
    client = make_client()
    for call in (lambda: client.synthesize(TEXT, voice=voice), lambda: client.spec(voice)):
        with pytest.raises(UnknownVoiceError) as info:
            call()
        reason = "unknown model" if voice == "nosuchvoice" else "not a melstream voice"
        assert voice in str(info.value) and reason in str(info.value), info.value


@pytest.mark.parametrize("text, reason", [("   ", "TextError: text has nothing to speak"),
                                          ("word " * 3000, "TextError: text is 15000 characters; the limit is")])
def test_invalid_input(make_client: Callable[..., AnyClient], text: str, reason: str) -> None:
    client = make_client()
    with pytest.raises(InvalidInputError, match=reason):
        client.synthesize(text, voice="fastvoice")
    assert len(client.synthesize(TEXT, voice="fastvoice")) > 0  # the client (and the server) go on serving


@pytest.mark.parametrize("options, reason", [({"pace": 100.0}, r"\[INVALID_ARG\] input PACE"),
                                             ({"chunk_frames": -1}, r"\[INVALID_ARG\] input CHUNK_FRAMES")])
def test_invalid_option(make_client: Callable[..., AnyClient], options: dict[str, float], reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        make_client().synthesize(TEXT, voice="fastvoice", **options)  # type: ignore[arg-type]


def test_text_with_no_utf8_form_is_refused_before_sending(make_client: Callable[..., AnyClient]) -> None:
    with pytest.raises(InvalidInputError, match="TEXT is not valid Unicode"):
        make_client().synthesize("half a pair: \ud800", voice="fastvoice")


def test_timeout(make_client: Callable[..., AnyClient]) -> None:
    client = make_client()
    client.spec("tacovoice")  # the config within the client's own timeout; the stream's wait is the tiny one
    with pytest.raises(ClientTimeoutError, match="no response within 0.001 s"):
        client.synthesize(LONG, voice="tacovoice", chunk_frames=0, timeout_s=0.001)
    assert len(client.synthesize(TEXT, voice="tacovoice")) > 0


def test_nothing_listening(make_client: Callable[..., AnyClient]) -> None:
    url = f"localhost:{free_port()}"
    client = make_client(url, timeout_s=10)
    with pytest.raises(ServerUnavailableError, match=url):
        client.synthesize(TEXT, voice="fastvoice")
    with pytest.raises(ServerUnavailableError, match=url):
        client.spec("fastvoice")


def test_voices(make_client: Callable[..., AnyClient]) -> None:
    assert make_client().voices() == VOICES


@pytest.mark.parametrize("voice", VOICES)
def test_spec_and_n_mels_come_from_the_server(make_client: Callable[..., AnyClient], root: Path, voice: str) -> None:
    client = make_client()
    spec = client.spec(voice)
    assert isinstance(spec, AddonSpec) and spec.path is None  # rebuilt from the server's JSON alone
    local = read_addon_spec(root / "addons" / voice)
    assert spec.to_json() == local.to_json() and spec.audio == local.audio
    assert client.spec(voice) is spec  # kept per voice
    chunks = list(client.stream(TEXT, voice=voice))
    assert chunks and all(c.shape[1:] == (spec.audio.n_mels,) and c.dtype == np.float32 for c in chunks)


def test_http_reshapes_with_the_voices_n_mels(server: TritonServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """HttpClient shapes MEL with the n_mels of the voice's spec, not a constant: a spec that says half as
    many bins gives twice the frames of half the width, the same values."""
    client = HttpClient(server.http_url)
    whole = client.synthesize(TEXT, voice="fastvoice", chunk_frames=0)
    real = client.spec("fastvoice")
    half = dataclasses.replace(real, audio=dataclasses.replace(real.audio, n_mels=real.audio.n_mels // 2))
    monkeypatch.setattr(client, "spec", lambda voice: half)
    reshaped = client.synthesize(TEXT, voice="fastvoice", chunk_frames=0)
    assert reshaped.shape == (2 * len(whole), real.audio.n_mels // 2)
    np.testing.assert_array_equal(reshaped.reshape(whole.shape), whole)


def test_grpc_checks_mel_against_the_voices_n_mels(server: TritonServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(server.grpc_url) as client:
        real = client.spec("fastvoice")
        other = dataclasses.replace(real, audio=dataclasses.replace(real.audio, n_mels=real.audio.n_mels + 1))
        monkeypatch.setattr(client, "spec", lambda voice: other)
        with pytest.raises(ClientError, match=f"not frames of the voice's {real.audio.n_mels + 1} mel bins"):
            client.synthesize(TEXT, voice="fastvoice")


def test_empty_result_has_the_voices_width(make_client: Callable[..., AnyClient], monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    real = client.spec("fastvoice")
    narrow = dataclasses.replace(real, audio=dataclasses.replace(real.audio, n_mels=7))
    monkeypatch.setattr(client, "spec", lambda voice: narrow)
    monkeypatch.setattr(client, "stream", lambda text, **options: iter(()))
    empty = client.synthesize(TEXT, voice="fastvoice")
    assert empty.shape == (0, 7) and empty.dtype == np.float32


LIGHT_CHILD = r"""
import importlib.metadata, json, sys
calls = []
real_entry_points = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda *a, **k: calls.append(repr((a, k))) or real_entry_points(*a, **k)
import melstream.client
with melstream.client.Client(sys.argv[1], timeout_s=30) as client:
    specs = {voice: client.spec(voice) for voice in client.voices()}
print(json.dumps({"modules": sorted(sys.modules), "entry_point_calls": calls,
                  "specs": {v: [s.audio.n_mels, list(s.networks)] for v, s in specs.items()}}))
"""


def test_reading_a_served_voices_spec_imports_no_component_or_plugin(server: TritonServer, root: Path) -> None:
    """A fresh interpreter: ``import melstream.client``, list the served voices and read their specs over gRPC."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LIGHT_CHILD, server.grpc_url], capture_output=True, text=True,
                            timeout=120, cwd=root, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for voice in VOICES:  # the specs are the shipped voices'
        local = read_addon_spec(root / "addons" / voice)
        assert seen["specs"][voice] == [local.audio.n_mels, list(local.networks)]
    modules = set(seen["modules"])
    assert {"melstream.client", "melstream_client.spec"} <= modules  # the check sees melstream's own modules
    assert sorted(m for m in modules if m.startswith(("melstream.components", "melstream.stack", "melstream.addon",
                                                      "melstream.registry", "melstream.blocks"))) == []
    assert seen["entry_point_calls"] == []
