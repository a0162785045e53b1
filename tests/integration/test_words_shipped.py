"""Word timestamps on the shipped voices, in-process (issue 13, item 4): every word of the text once, in order,
monotonic, the last ending at the end of the audio within a frame; the same words lazily and from the whole text;
fastvoice's words follow its own durations; a number espeak reads as several words is one word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melstream.addon import load_addon
from melstream.blocks import StreamablePipeline, TokenStream
from melstream.components.upsampler import frame_counts
from melstream.words import timed_words

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Hello there, my friend. How are you today?",
    "It costs $3.50, or 3.5 euros; call 555-1234 at 3 p.m. Ok?",
    "Add a function, with arguments, to be called when the test is completed.",
    "Wait... what?! No.",
]


@pytest.fixture(scope="module", params=["fastvoice", "tacovoice"])
def pipeline(request):
    return load_addon(ROOT / "addons" / request.param).build()


def words_of(pipeline, text):
    stream = TokenStream(pipeline.frontend.sentences(text), pipeline.frontend.end_id)
    stream.all()
    return stream.words(), stream.known


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("pace", [None, 0.5, 2.0])
def test_words_cover_the_text_in_order(pipeline, text, pace):
    words, _ = words_of(pipeline, text)
    chunks = list(pipeline.stream_outputs(text, words=True, pace=pace))
    got = [w for c in chunks for w in c["words"]]
    assert [w[0] for w in got] == [w[0] for w in words]
    assert "$3.50" not in text or "$3.50" in [w[0] for w in got]  # one word, not the whole sentence
    previous = 0.0
    for _, start, end in got:
        assert previous - 1e-9 <= start <= end
        previous = end
    total = sum(len(c["mel"]) for c in chunks) * pipeline.frame_s
    assert abs(got[-1][2] - total) <= pipeline.frame_s
    elapsed = 0.0
    for c in chunks:
        elapsed += len(c["mel"]) * pipeline.frame_s
        assert all(end <= elapsed + 1e-9 for _, _, end in c["words"])


@pytest.mark.parametrize("text", TEXTS)
def test_lazy_and_whole_text_give_the_same_words(pipeline, text, monkeypatch):
    lazy = [w for c in pipeline.stream_outputs(text, words=True) for w in c["words"]]
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    whole = [w for c in pipeline.stream_outputs(text, words=True) for w in c["words"]]
    assert lazy == whole


@pytest.mark.parametrize("text", TEXTS)
def test_fastvoice_words_follow_its_durations(text):
    pipeline = load_addon(ROOT / "addons" / "fastvoice").build()
    words, tokens = words_of(pipeline, text)
    segmented = pipeline.streamable_block.stack[0]
    durations = segmented.sequence_block({"tokens": tokens})["durations"]
    counts = frame_counts(durations, max_frames_per_token=segmented.streamable_block.max_frames_per_token)
    want = [w for c in timed_words(pipeline.frame_s, words, [np.repeat(np.arange(len(tokens)), counts)]) for w in c]
    got = [w for c in pipeline.stream_outputs(text, words=True, chunk_frames=5) for w in c["words"]]
    assert got == want
