"""The sentence-by-sentence text front end (issue 13): splitting, word spans, TokenStream, laziness, equality."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from melstream.blocks import StreamablePipeline, TokenStream
from melstream.errors import InputError, TextError
from melstream.text import CharFrontend, Sentence

CORPUS = [
    "Hello.",
    "Hello there. How are you? I am fine! Thanks; bye: now.",
    "Dr. Smith paid $3.50 for 3.5 kg on the 21st. Mr. Jones did not.",
    'She said "yes." Then (quietly) left... Really?!',
    "a trailing sentence without a terminator",
    " ".join(["word"] * 400),
    "One. Two. " * 30 + "Three",
    "!!! Hello ...",
]


@pytest.fixture
def fe() -> CharFrontend:
    return CharFrontend()


def joined(sentences: list[Sentence], end_id: int) -> np.ndarray:
    return np.concatenate([s.ids for s in sentences] + [np.asarray([end_id], np.int64)])


# ---------------------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("text", CORPUS)
def test_sentences_concatenate_to_encode(fe, text):
    sentences = list(fe.sentences(text))
    assert sentences
    assert np.array_equal(joined(sentences, fe.end_id), fe.encode(text))
    assert "".join(s.text for s in sentences) == fe.normalize(text)


@pytest.mark.parametrize(("text", "pieces"), [
    ("Hello.", ["hello."]),
    ("One. Two? Three! Four; five: six", ["one. ", "two? ", "three! ", "four; ", "five: ", "six"]),
    ("no punctuation at all", ["no punctuation at all"]),
    ("Trailing text. without terminator", ["trailing text. ", "without terminator"]),
    ("Dr. Smith met Mr. Jones.", ["dr. smith met mr. jones."]),
    ("It is 3.5 now. Yes.", ["it is three point five now. ", "yes."]),
    ("Wait... what?! Ok.", ["wait... ", "what?! ", "ok."]),
])
def test_split_edges(fe, text, pieces):
    assert fe.split(text) == pieces


@pytest.mark.parametrize("text", ["", "   \n\t ", "...!?", "\U0001f600"])
def test_nothing_to_speak_is_refused_at_the_first_sentence(fe, text):
    sentences = fe.sentences(text)  # a generator: nothing runs yet
    with pytest.raises(TextError, match="nothing to speak"):
        next(sentences)


def test_too_long_is_refused_at_the_first_sentence():
    sentences = CharFrontend(max_chars=10).sentences("Hello there. Again.")
    with pytest.raises(TextError, match="the limit is 10"):
        next(sentences)


def test_words_carry_their_token_ranges(fe):
    sentences = list(fe.sentences("Hello, big world. It's 3rd!"))
    assert [[(w.text, w.start, w.end) for w in s.words] for s in sentences] == [
        [("hello", 0, 5), ("big", 7, 10), ("world", 11, 16)],
        [("it's", 0, 4), ("third", 5, 10)],
    ]
    for s in sentences:
        for w in s.words:
            assert "".join(fe.symbols[i] for i in s.ids[w.start:w.end]) == w.text


# -------------------------------------------------------------------------------------------- TokenStream


class Counting:
    """A front end's sentences, counting how many were asked for."""

    def __init__(self, frontend: CharFrontend) -> None:
        self.frontend = frontend
        self.made = 0
        self.end_id = frontend.end_id
        self.symbols = frontend.symbols

    def sentences(self, text: str | bytes) -> Iterator[Sentence]:
        for sentence in self.frontend.sentences(text):
            self.made += 1
            yield sentence

    def encode(self, text: str | bytes) -> np.ndarray:
        return self.frontend.encode(text)


def test_token_stream_reads_only_as_far_as_asked(fe):
    text = "One two. Three four. Five six."
    counting = Counting(fe)
    stream = TokenStream(counting.sentences(text), fe.end_id)
    assert counting.made == 0 and not stream.complete
    assert stream.ensure(3) == len("one two. ")
    assert counting.made == 1
    assert stream.ensure(len("one two. ") + 1) == len("one two. three four. ")
    assert counting.made == 2
    assert np.array_equal(stream.all(), fe.encode(text))
    assert stream.complete and counting.made == 3
    assert stream.ensure(10_000) == len(fe.encode(text))
    assert [(w, text_at(stream, a, b)) for w, a, b in stream.words()][-1] == ("six", "six")


def text_at(stream: TokenStream, a: int, b: int) -> str:
    return "".join(CharFrontend.symbols[i] for i in stream.known[a:b])


def test_token_stream_of_an_empty_source_is_the_end_id():
    stream = TokenStream(iter(()), 1)
    assert stream.ensure(5) == 1 and stream.complete
    assert stream.known.tolist() == [1]


# ------------------------------------------------------------------------------------ the pipeline, lazily

LONG = " ".join(f"Sentence number {i} is here." for i in range(1, 41))


def test_first_chunk_does_not_wait_for_the_second_sentence(fast_addon):
    pipeline = fast_addon.build()
    assert pipeline.reads_text_lazily
    counting = Counting(pipeline.frontend)
    pipeline.frontend = counting
    chunks = pipeline.stream(LONG)
    assert counting.made == 0  # nothing before the first pull
    next(chunks)
    first = counting.made
    chunks.close()
    # the first segment (16 tokens + the encoders' context) lies inside the first two sentences
    assert 1 <= first <= 2 < 40


def test_whole_text_path_reads_everything_first(fast_addon, monkeypatch):
    pipeline = fast_addon.build()
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    counting = Counting(pipeline.frontend)
    pipeline.frontend = counting
    next(pipeline.stream(LONG))
    assert counting.made == 0  # it used encode(), the whole text at once


@pytest.mark.parametrize("text", [*CORPUS, LONG])
@pytest.mark.parametrize("chunk_frames", [None, 7])
def test_lazy_equals_whole_fast(fast_addon, monkeypatch, text, chunk_frames):
    pipeline = fast_addon.build()
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    whole = pipeline.synthesize(text, chunk_frames=chunk_frames)
    monkeypatch.setattr(StreamablePipeline, "lazy_text", True)
    lazy = pipeline.synthesize(text, chunk_frames=chunk_frames)
    assert lazy.shape == whole.shape and len(whole)
    np.testing.assert_allclose(lazy, whole, atol=1e-5)


@pytest.mark.parametrize("text", ["Hello there. How are you?", LONG[:400], LONG])
def test_taco_reads_lazily_and_is_unchanged(taco_addon, monkeypatch, text):
    pipeline = taco_addon.build()
    assert pipeline.reads_text_lazily  # its attention starts on a prefix (tests/unit/test_attention_lazy.py)
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    whole = pipeline.synthesize(text)
    monkeypatch.setattr(StreamablePipeline, "lazy_text", True)
    counting = Counting(pipeline.frontend)
    pipeline.frontend = counting
    chunks = pipeline.stream(text)
    next(chunks)
    assert counting.made <= 2  # the first chunk read a sentence or two
    chunks.close()
    np.testing.assert_allclose(pipeline.synthesize(text), whole, atol=1e-6)


def test_lazy_context_tokens_are_the_same(fast_addon):
    pipeline = fast_addon.build()
    context = pipeline.lazy_inputs_for(LONG, pace=1.5, chunk_frames=4)
    assert isinstance(context["tokens"], TokenStream)
    assert float(context["pace"]) == 1.5 and int(context["chunk_frames"]) == 4
    assert np.array_equal(context["tokens"].all(), pipeline.inputs_for(LONG)["tokens"])


@pytest.mark.parametrize(("kwargs", "match"), [({"pace": 0.0}, "PACE"), ({"chunk_frames": -1}, "CHUNK_FRAMES")])
def test_lazy_inputs_refuse_bad_options(fast_addon, kwargs, match):
    with pytest.raises(InputError, match=match):
        fast_addon.build().lazy_inputs_for("Hello.", **kwargs)


def test_lazy_stream_keeps_text_errors(fast_addon):
    pipeline = fast_addon.build()
    with pytest.raises(TextError, match="nothing to speak"):
        next(pipeline.stream("   "))
    with pytest.raises(TextError, match="not valid UTF-8"):
        next(pipeline.stream(b"Hello \xff there."))
