"""The shipped voices read a text sentence by sentence (issue 13) and speak it exactly as from the whole text.

espeak-ng reads a text clause by clause and keeps one character of lookahead between clauses; the sentence
front end restarts it at that character for each sentence and reads the kept one away (melstream.espeak).
Here: its phonemes equal the whole text's on a corpus of edge cases, also with other texts read in between
and after a reading stopped early; and both shipped voices give the same frames lazily as from the whole text,
in-process (fastvoice exactly: it reads the text lazily; tacovoice reads it whole, sentence by sentence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melstream.addon import load_addon
from melstream.blocks import StreamablePipeline, TokenStream
from melstream.espeak import LONG_SENTENCE, get_espeak

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: one sentence of 611 characters, many commas and one full stop (numbers, money and words espeak joins in it)
COMMAS = ("When the committee met on the 3rd of May, after a long delay, the members agreed, with some reluctance, "
          "to be bound by the terms of the 2019 agreement, which had been signed in haste, reviewed by lawyers, "
          "revised twice, and finally accepted by all 12 parties, although several of them, including the largest, "
          "had objected to the clauses on pricing, on delivery, and on the penalties, which were, in their view, "
          "far too harsh for a market that was, at the time, still recovering from a crisis that had cost it 3.5 "
          "billion dollars, or about $40 for every person in the region, and that would take years to repair.")
CORPUS = [
    "Hello there. How are you? I am fine! Thanks.",
    "Dr. Smith lives at 12 Main St. in the U.S. He paid $3.50 for 3.5 kg.",
    'He said "hi." Then he left. She asked, "why?" and cried.',
    "Wait... what? No!! Really?!",
    "One, two; three: four - five.",
    "e.g. this, i.e. that. Mr. Jones and Mrs. Brown met at 10:30 a.m. on Jan. 5th.",
    " ".join(["word"] * 300) + ". And more.",
    "The end",
    "(Brackets.) [More.] Fine.",
    "It's 1,234,567 people. Version 2.0.1 is out. The U.S.A.'s flag. OK.",
    "Hi. \"Yes.\" No. 'Maybe.' (Sure.) Done!",
    "A. B. C. D. 1. 2. 3.",
    "Wow!Really?Yes. End with space. ",
    "I paid 1.5 million dollars; it's 50% off: great. Call 555-1234 at 3 p.m. Ok?",
    ". Leading dot. ,, commas ,, everywhere .",
    COMMAS,
    COMMAS.replace(", ", ' (" ', 1).replace(", ", ' ") ', 1),  # a long sentence's commas next to quotes and brackets
]


@pytest.mark.parametrize("text", CORPUS)
def test_espeak_sentences_are_its_clauses(text):
    espeak = get_espeak("en-us")
    sentences = list(espeak.sentences(text))
    assert [clause for _, clauses in sentences for clause in clauses] == espeak.clauses(text)
    if text.count(". ") >= 2:
        assert len(sentences) > 1


def test_a_long_sentence_ends_at_its_commas():
    """Past LONG_SENTENCE bytes a sentence ends at its next comma (so the first words of a long one need not wait
    for the rest of it); a shorter one does not."""
    espeak = get_espeak("en-us")
    sentences = [piece for piece, _ in espeak.sentences(COMMAS)]
    assert len(sentences) == 3 and " ".join(sentences) == COMMAS
    for piece in sentences[:-1]:
        # at the first comma once it is long (LONG_SENTENCE counts what espeak read: the space and the character after)
        assert piece.endswith(",") and len(piece) + 2 >= LONG_SENTENCE > len(piece.rsplit(", ", 1)[0]) + 2
    short = COMMAS[:COMMAS.index(", ", LONG_SENTENCE - 60)] + "."
    assert [piece for piece, _ in espeak.sentences(short)] == [short]


def test_espeak_sentences_interleaved_and_stopped_early():
    espeak = get_espeak("en-us")
    first, second = espeak.sentences(CORPUS[0]), espeak.sentences(CORPUS[2])
    a, b = [], []
    for x, y in zip(first, second, strict=False):
        a += x[1]
        b += y[1]
        espeak.clauses("Another stream's text. In between.")
    a += [c for _, clauses in first for c in clauses]
    b += [c for _, clauses in second for c in clauses]
    assert a == espeak.clauses(CORPUS[0]) and b == espeak.clauses(CORPUS[2])
    expected = espeak.clauses("Zed is next.")
    stopped = espeak.sentences("First one. Second one.")
    next(stopped)
    stopped.close()
    assert espeak.clauses("Zed is next.") == expected  # nothing of the stopped text is left behind


@pytest.mark.parametrize("voice", ["fastvoice", "tacovoice"])
def test_frontend_sentences_equal_encode(voice):
    frontend = load_addon(ROOT / "addons" / voice).frontend()
    for text in CORPUS:
        sentences = list(frontend.sentences(text))
        tokens = np.concatenate([s.ids for s in sentences] + [np.asarray([frontend.end_id])])
        assert np.array_equal(tokens, frontend.encode(text)), text
        for s in sentences:
            assert all(0 <= w.start <= w.end <= len(s.ids) for w in s.words)


@pytest.mark.parametrize(("voice", "atol"), [("fastvoice", 1e-4), ("tacovoice", 1e-3)])
def test_shipped_voices_lazy_equals_whole(voice, atol, monkeypatch):
    pipeline = load_addon(ROOT / "addons" / voice).build()
    assert pipeline.reads_text_lazily  # both voices start on a prefix of the text
    texts = [*CORPUS, " ".join(["The quick brown fox jumps over the lazy dog while the band plays 12 songs."] * 14)]
    for text in texts:
        monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
        whole = pipeline.synthesize(text)
        monkeypatch.setattr(StreamablePipeline, "lazy_text", True)
        lazy = pipeline.synthesize(text)
        assert lazy.shape == whole.shape, text
        np.testing.assert_allclose(lazy, whole, atol=atol, err_msg=text)


def test_fastvoice_first_chunk_reads_one_sentence_ahead():
    pipeline = load_addon(ROOT / "addons" / "fastvoice").build()
    context = pipeline.lazy_inputs_for(" ".join(f"This is sentence {i}." for i in range(1, 60)))
    tokens = context["tokens"]
    assert isinstance(tokens, TokenStream)
    chunks = pipeline.generate(context)
    next(chunks)
    assert len(tokens.sentences) <= 3 and not tokens.complete
    chunks.close()
