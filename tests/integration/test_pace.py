"""PACE means the same on both shipped voices over gRPC, and text no voice can pronounce says so (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest

from melstream.errors import InvalidInputError
from melstream.serving.server import TritonServer
from melstream_client import Client

pytestmark = pytest.mark.integration

TEXT = "The attention voice now keeps the pace it is asked for."


@pytest.mark.parametrize("voice", ["tacovoice", "fastvoice"])
def test_pace_2_gives_about_half_the_frames(server: TritonServer, voice: str) -> None:
    with Client(server.grpc_url, timeout_s=120) as client:
        own = len(client.synthesize(TEXT, voice=voice))
        fast = len(client.synthesize(TEXT, voice=voice, pace=2.0))
        slow = len(client.synthesize(TEXT, voice=voice, pace=0.5))
    assert own > 50
    if voice == "tacovoice":  # its frames, stretched: round(T / pace) exactly, within a frame for safety
        assert abs(fast - round(own / 2)) <= 1, (own, fast)
        assert abs(slow - 2 * own) <= 1, (own, slow)
    else:  # durations / pace, each rounded: about half, about double
        assert 0.4 * own < fast < 0.6 * own and 1.8 * own < slow < 2.2 * own, (own, fast, slow)


def test_paced_attention_streams_equal_the_whole_utterance(server: TritonServer) -> None:
    with Client(server.grpc_url, timeout_s=120) as client:
        whole = client.synthesize(TEXT, voice="tacovoice", pace=1.5, chunk_frames=0)
        chunks = list(client.stream(TEXT, voice="tacovoice", pace=1.5, chunk_frames=7))
    assert all(len(c) == 7 for c in chunks[:-1])
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-4)


@pytest.mark.parametrize("voice", ["tacovoice", "fastvoice"])
@pytest.mark.parametrize("text, script", [("你好", "CJK"), ("Привет, мир!", "Cyrillic"), ("مرحبا", "Arabic")])
def test_text_no_voice_can_pronounce_says_so(server: TritonServer, voice: str, text: str, script: str) -> None:
    with Client(server.grpc_url, timeout_s=60) as client, pytest.raises(InvalidInputError) as info:
        client.synthesize(text, voice=voice)
    message = str(info.value)
    assert "[INVALID_ARG] input TEXT" in message and "nothing this voice can pronounce" in message, message
    assert f"script it does not speak ({script})" in message, message
