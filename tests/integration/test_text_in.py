"""Text in pieces over gRPC (issue 13), against a real Triton: a paragraph fed a few words at a time with
pauses, as a language model writes it, starts speaking before its last piece is sent and speaks exactly what
the whole text in one request does; flushes, async iterables, and the errors of a text stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from melstream.serving.server import TritonServer
from melstream_client import FLUSH, Client
from melstream_client.errors import InvalidInputError
from tests.servers import quiet

PARAGRAPH = ("Thanks for calling. Your order shipped this morning, and it should arrive on Thursday. "
             "If you are not home, the driver will leave it at the front desk. Is there anything else I can help with? "
             "I can also send you the tracking number by text message.")
PAUSE_S = 0.03  # between pieces: a language model writing (not a wait for anything)
TOLERANCE = {"fastvoice": 1e-4, "tacovoice": 1e-3}


def words_in_threes(text: str) -> list[str]:
    words = text.split(" ")
    return [" ".join(words[i:i + 3]) + (" " if i + 3 < len(words) else "") for i in range(0, len(words), 3)]


@pytest.mark.parametrize("voice", ["fastvoice", "tacovoice"])
def test_a_paragraph_in_pieces_starts_before_its_end_and_equals_the_whole_text(server: TritonServer, voice: str) -> None:
    pieces = words_in_threes(PARAGRAPH)
    assert "".join(pieces) == PARAGRAPH
    sent_last_at: list[float] = []

    def writing() -> Iterator[str]:
        for i, piece in enumerate(pieces):
            time.sleep(PAUSE_S)
            if i == len(pieces) - 1:
                sent_last_at.append(time.monotonic())
            yield piece

    with Client(server.grpc_url, timeout_s=60) as client:
        expected = client.synthesize(PARAGRAPH, voice=voice)
        chunks, first_at = [], None
        for chunk in client.stream_text(writing(), voice=voice):
            first_at = first_at or time.monotonic()
            chunks.append(chunk["mel"])
    got = np.concatenate(chunks)
    assert first_at is not None and sent_last_at and first_at < sent_last_at[0], \
        f"the first audio came {first_at - sent_last_at[0]:+.3f} s after the last piece was sent"
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOLERANCE[voice])


def test_an_async_iterable_of_pieces(server: TritonServer) -> None:
    async def writing() -> AsyncIterator[str]:
        for piece in words_in_threes(PARAGRAPH):
            await asyncio.sleep(PAUSE_S / 3)
            yield piece

    async def speak() -> np.ndarray:
        with Client(server.grpc_url, timeout_s=60) as client:
            return np.concatenate([c["mel"] async for c in client.stream_text(writing(), voice="fastvoice")])

    got = asyncio.run(speak())
    with Client(server.grpc_url) as client:
        np.testing.assert_allclose(got, client.synthesize(PARAGRAPH, voice="fastvoice"), atol=1e-4)


def test_a_flush_speaks_mid_sentence_and_the_stream_goes_on(server: TritonServer) -> None:
    with Client(server.grpc_url, timeout_s=60) as client:
        got = np.concatenate([c["mel"] for c in client.stream_text(["Well, let me", " think", FLUSH, " about it."], voice="fastvoice")])
        expected = np.concatenate([client.synthesize("Well, let me think", voice="fastvoice"),
                                   client.synthesize("about it.", voice="fastvoice")])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_text_stream_errors(server: TritonServer) -> None:
    with Client(server.grpc_url, timeout_s=30) as client:
        with pytest.raises(InvalidInputError, match="nothing to speak"):
            list(client.stream_text(["", "  "], voice="fastvoice"))
        with pytest.raises(InvalidInputError, match="pieces must be str"):
            list(client.stream_text(["Hello", 42], voice="fastvoice"))  # type: ignore[list-item]
        with pytest.raises(InvalidInputError, match="PACE"):
            list(client.stream_text(["Hello there."], voice="fastvoice", pace=99.0))
        # the server keeps serving, and the same client streams again
        assert len(np.concatenate([c["mel"] for c in client.stream_text(["Still ", "here."], voice="fastvoice")])) > 0


def test_closing_a_text_stream_early_cancels_it_on_the_server(server: TritonServer) -> None:
    def endless() -> Iterator[str]:
        while True:
            time.sleep(PAUSE_S)
            yield "More words come, sentence after sentence. "

    with Client(server.grpc_url, timeout_s=30) as client:
        stream = client.stream_text(endless(), voice="fastvoice")
        assert len(next(stream)["mel"]) > 0
        stream.close()  # type: ignore[attr-defined]
        after = quiet(server, "fastvoice", timeout_s=10)  # the stream ended on the server (cancelled), freeing its slot
        assert after.get('melstream_streams_total{outcome="cancelled",voice="fastvoice"}', 0.0) >= 1
        assert len(client.synthesize("And the voice serves on.", voice="fastvoice")) > 0
