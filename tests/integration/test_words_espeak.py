"""The espeak front end's words (issue 20), in-process: made only when read (a request without word timestamps
never pairs espeak's words with the text's, nor reads a word alone), the same whenever and in whichever thread
they are made, and right on long sentences and the edge-case corpus: every text word once, in order, over
token ranges that follow each other."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

import melstream.text as text_module
from melstream.addon import load_addon
from melstream.blocks import StreamablePipeline, TokenStream
from melstream.text import EspeakFrontend
from tests.integration.test_sentences_espeak import COMMAS, CORPUS
from tests.integration.test_words_shipped import TEXTS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLAUSES = COMMAS.removesuffix(".").split(", ")
#: one sentence of about 5,000 characters: COMMAS' clauses over and over, one full stop
LONG = ", ".join(CLAUSES[i % len(CLAUSES)] for i in range(8 * len(CLAUSES) + 3)) + "."
#: a text word as the front end finds them (melstream.text: runs of letters, digits and ' . , $ % -)
TEXT_WORD = re.compile(r"\$?[A-Za-z0-9](?:[A-Za-z0-9'.,$%-]*[A-Za-z0-9%])?")


@pytest.fixture(scope="module", params=["fastvoice", "tacovoice"])
def pipeline(request: pytest.FixtureRequest) -> StreamablePipeline:
    return load_addon(ROOT / "addons" / request.param).build()


def recording(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every pairing and every text word read alone."""
    calls: list[str] = []
    pair, alone = text_module._pair_words, EspeakFrontend._phoneme_words

    def paired(*args: Any) -> Any:
        calls.append("pair")
        return pair(*args)

    def read_alone(self: EspeakFrontend, word: str) -> list[str]:
        calls.append(word)
        return alone(self, word)

    monkeypatch.setattr(text_module, "_pair_words", paired)
    monkeypatch.setattr(EspeakFrontend, "_phoneme_words", read_alone)
    return calls


def test_sentences_make_no_words_until_they_are_read(pipeline: StreamablePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = recording(monkeypatch)
    sentences = [s for text in [*CORPUS, LONG] for s in pipeline.frontend.sentences(text)]
    assert len(sentences) > len(CORPUS) and calls == []
    assert all(s.words for s in sentences if any(c.isalnum() for c in s.text))
    assert "pair" in calls and len(calls) > len(sentences)


@pytest.mark.parametrize("lazy", [True, False])
def test_a_stream_without_word_timestamps_makes_no_words(pipeline: StreamablePipeline, monkeypatch: pytest.MonkeyPatch,
                                                         lazy: bool) -> None:
    monkeypatch.setattr(StreamablePipeline, "lazy_text", lazy)
    calls = recording(monkeypatch)
    chunks = pipeline.stream_outputs(LONG)
    next(chunks)
    chunks.close()
    assert sum(len(c["mel"]) for c in pipeline.stream_outputs(COMMAS)) > 0
    assert calls == []
    assert [w[0] for c in pipeline.stream_outputs(COMMAS, words=True) for w in c["words"]][:3] == ["When", "the", "committee"]
    assert "pair" in calls


def test_words_made_later_in_another_thread_are_the_same(pipeline: StreamablePipeline) -> None:
    """A sentence's words may be made long after espeak read it, by another stream's thread, after other texts:
    what they read (each text word alone, a pass of its own) depends on nothing espeak kept."""
    voice = pipeline.frontend.voice
    symbols = pipeline.frontend.symbols
    want = [s.words for s in EspeakFrontend(symbols=symbols, voice=voice).sentences(COMMAS)]
    frontend = EspeakFrontend(symbols=symbols, voice=voice)  # its own cache of words read alone: nothing kept
    sentences = list(frontend.sentences(COMMAS))
    other = EspeakFrontend(symbols=symbols, voice=voice)
    for text in CORPUS[:4]:  # other streams' texts in between, their words too, one stopped early
        for s in other.sentences(text):
            assert s.words is not None
    stopped = other.sentences("Wait... one, two. Three..")
    next(stopped)
    stopped.close()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(s.words for s in sentences))
    reader.start()
    reader.join(60)
    assert got == want


@pytest.mark.parametrize("text", [*CORPUS, *TEXTS, LONG])
def test_every_text_word_once_in_order(pipeline: StreamablePipeline, text: str) -> None:
    frontend = pipeline.frontend
    stream = TokenStream(frontend.sentences(text), frontend.end_id)
    tokens = stream.all()
    words = stream.words()
    # a word's text is one text word, or the text words espeak joined with what lies between them
    assert [w for name, _, _ in words for w in TEXT_WORD.findall(name)] == TEXT_WORD.findall(frontend.normalize(text))
    assert all(len(TEXT_WORD.findall(name)) <= 3 for name, _, _ in words), "a sentence left as one word"
    previous = 0
    for name, start, end in words:
        assert previous <= start <= end <= len(tokens) - 1, (name, start, end)
        previous = end


@pytest.mark.parametrize("text", [COMMAS, LONG])
def test_a_long_sentence_has_the_words_of_its_clauses(pipeline: StreamablePipeline, text: str) -> None:
    """Paired over a whole long sentence, its words are those of its clauses each read as a text of its own (and
    the tokens too): the pairing does not drift however long the sentence."""
    frontend = pipeline.frontend
    stream = TokenStream(frontend.sentences(text), frontend.end_id)
    tokens = stream.all()[:-1].tolist()
    clauses = [clause + "," for clause in text.removesuffix(".").split(", ")]
    clauses[-1] = clauses[-1][:-1] + "."
    want_tokens: list[int] = []
    want_words: list[tuple[str, int, int]] = []
    for clause in clauses:
        alone = TokenStream(frontend.sentences(clause), frontend.end_id)
        at = len(want_tokens)
        want_tokens += alone.all()[:-1].tolist()
        want_words += [(name, at + start, at + end) for name, start, end in alone.words()]
    assert tokens == want_tokens
    assert stream.words() == want_words
