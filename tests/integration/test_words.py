"""Word timestamps from a real Triton (issue 13): over gRPC and HTTP server-sent events, for both voices, for a
whole text and for a text in pieces, and from the command line.  The properties: every word of the text once,
in order; monotonic times; the last word ends with the audio (within one frame); asking for words changes no
frame."""

from __future__ import annotations

import numpy as np
import pytest

from melstream.cli import main
from melstream.serving.server import TritonServer
from melstream_client import Client, HttpClient
from melstream_client.wire import Word

TEXT = "Good morning. Your table for four is ready at seven thirty, by the window."
VOICES = ("fastvoice", "tacovoice")


def spoken(chunks: list[dict]) -> tuple[np.ndarray, list[Word]]:
    return np.concatenate([c["mel"] for c in chunks]), [w for c in chunks for w in c["words"]]


def check_words(words: list[Word], frames: int, frame_s: float) -> None:
    assert words, "no words"
    assert all(w.start_s <= w.end_s for w in words)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(words, words[1:], strict=False)), words  # in order, not overlapping
    assert words[0].start_s >= 0 and abs(words[-1].end_s - frames * frame_s) <= frame_s + 1e-4


@pytest.mark.parametrize("voice", VOICES)
def test_words_over_grpc_and_http_are_the_same_and_cover_the_text(server: TritonServer, voice: str) -> None:
    with Client(server.grpc_url, timeout_s=60) as client:
        spec = client.spec(voice)
        frame_s = spec.audio.hop_length / spec.audio.sample_rate
        plain = client.synthesize(TEXT, voice=voice)
        chunks = list(client.stream_outputs(TEXT, voice=voice, words=True))
    assert all("words" in c for c in chunks)
    mel, words = spoken(chunks)
    np.testing.assert_array_equal(mel, plain)  # asking for words changes no frame
    check_words(words, len(mel), frame_s)
    # one word per word of the text (espeak may read one text word as several, e.g. numbers; not here)
    assert [w.text.lower().strip(".,") for w in words] == [t.lower().strip(".,") for t in TEXT.split()]
    http_mel, http_words = spoken(list(HttpClient(server.http_url, timeout_s=60).stream_outputs(TEXT, voice=voice, words=True)))
    np.testing.assert_allclose(http_mel, mel, atol=1e-5)
    assert http_words == words


def test_words_of_a_text_in_pieces_are_the_whole_texts(server: TritonServer) -> None:
    pieces = [TEXT[i:i + 7] for i in range(0, len(TEXT), 7)]
    with Client(server.grpc_url, timeout_s=60) as client:
        _, whole = spoken(list(client.stream_outputs(TEXT, voice="fastvoice", words=True)))
        _, piecewise = spoken(list(client.stream_text(pieces, voice="fastvoice", words=True)))
    assert piecewise == whole


def test_synth_prints_the_words(server: TritonServer, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", TEXT, "--voice", "fastvoice", "--url", server.grpc_url, "--out", str(tmp_path / "x.npy"), "--words"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.count("\t") == 2]
    assert [w.strip() for _, _, w in lines][:2] == ["Good", "morning"]
    starts = [float(a) for a, _, _ in lines]
    assert starts == sorted(starts) and len(lines) == len(TEXT.split())
