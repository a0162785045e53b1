"""Text in pieces (issue 13): the feed a text stream's requests fill, sentences made as each is complete, and the
voice model's sequences (one correlation id, many requests), with fakes: no server, no espeak-ng."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from melstream.errors import TextError
from melstream.serving.text_in import Piece, TextFeed, TextIdleError
from melstream.text import CharFrontend, sentences_from
from tests.unit.test_sentences import CORPUS as SENTENCE_CORPUS

# the front end's corpus, plus terminator runs that a text stream may type a character at a time
CORPUS = [*SENTENCE_CORPUS[:5], *SENTENCE_CORPUS[6:], "Wait... what?!  Really?", "Hi!!! ... Yes?? Ok. . . Done."]


def cut(text: str, rng: random.Random, most: int = 25) -> list[str]:
    """``text`` in pieces at random places (a few characters to a few words each)."""
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, most)))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(g.text == w.text and np.array_equal(g.ids, w.ids) and g.words == w.words
                                         for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("text", CORPUS)
def test_pieces_make_the_whole_texts_sentences(text: str) -> None:
    fe, rng = CharFrontend(), random.Random(text)
    whole = list(fe.sentences(text))
    for _ in range(10):
        pieces = cut(text, rng)
        assert same(list(sentences_from(fe, [Piece(p) for p in pieces])), whole), pieces
    # one character at a time, and with empty pieces between
    assert same(list(sentences_from(fe, [Piece(c) for c in text])), whole)
    assert same(list(sentences_from(fe, [Piece(p) for c in text for p in (c, "")])), whole)


def test_a_sentence_comes_out_once_the_next_has_begun() -> None:
    fe = CharFrontend()
    asked: list[str] = []
    out: list[str] = []

    def pieces() -> Iterator[Piece]:
        for p in ["Hello the", "re. How", " are you? I", " am fine"]:
            asked.append(p)
            yield Piece(p)

    for sentence in sentences_from(fe, pieces()):
        out.append(f"{sentence.text.strip()} after {len(asked)} pieces")
    assert out == ["hello there. after 2 pieces", "how are you? after 3 pieces", "i am fine after 4 pieces"]


def test_a_terminator_run_typed_in_pieces_is_one_sentence() -> None:
    fe = CharFrontend()
    got = [s.text for s in sentences_from(fe, [Piece(p) for p in ["Wait.", ".", ". w", "hat?", "!", " Yes."]])]
    assert got == [s.text for s in fe.sentences("Wait... what?! Yes.")]


def test_a_flush_ends_an_utterance_mid_sentence() -> None:
    """The feed ends an utterance at a flush: its text is spoken as if the text ended there."""
    fe, feed = CharFrontend(), TextFeed()
    for piece in (Piece("Well, let me"), Piece(" think", flush=True), Piece(" about it. Ok.")):
        feed.put(piece.text, flush=piece.flush)
    feed.close()
    first = [s.text for s in sentences_from(fe, feed.utterance())]
    second = [s.text for s in sentences_from(fe, feed.utterance())]
    assert first == [s.text for s in fe.sentences("Well, let me think")]
    assert second == [s.text for s in fe.sentences("about it. Ok.")] and feed.exhausted


def test_errors_of_a_text_stream() -> None:
    fe = CharFrontend(max_chars=20)
    with pytest.raises(TextError, match="the limit is 20"):  # at once, not at the end
        gen = sentences_from(fe, [Piece("Hello. "), Piece("x" * 30)])
        next(gen)
        next(gen)
    with pytest.raises(TextError, match="nothing to speak"):
        list(sentences_from(fe, [Piece(""), Piece("   "), Piece("...")]))
    # a tail of punctuation after speech is not an error: it is spoken as the whole text's is
    tail = list(sentences_from(CharFrontend(), [Piece("Hello."), Piece(" !!")]))
    assert same(tail, list(CharFrontend().sentences("Hello. !!")))


# --- the feed ------------------------------------------------------------------------------------------------

def test_the_feed_hands_pieces_over_in_order_as_they_come() -> None:
    feed = TextFeed()
    got: list[Piece] = []
    reader = threading.Thread(target=lambda: got.extend(feed.pieces()))
    reader.start()
    feed.put("Hello ")
    feed.put("there.", flush=True)
    time.sleep(0.05)  # the reader waits for more meanwhile (nothing to wait on: the test's pause between pieces)
    assert reader.is_alive() and [p.text for p in got] == ["Hello ", "there."]
    feed.put(" Bye.")
    feed.close()
    reader.join(5)
    assert not reader.is_alive()
    assert got == [Piece("Hello "), Piece("there.", flush=True), Piece(" Bye.")]
    with pytest.raises(Exception, match="has ended"):
        feed.put("more")


def test_a_feed_whose_pieces_stop_coming_ends_with_an_error() -> None:
    feed = TextFeed(idle_timeout_s=0.2)
    feed.put("Hello")
    pieces = feed.pieces()
    assert next(pieces) == Piece("Hello")
    started = time.monotonic()
    with pytest.raises(TextIdleError, match="no text for 0.2 s"):
        next(pieces)
    assert 0.2 <= time.monotonic() - started < 2


def test_a_stopped_stream_stops_waiting_for_text() -> None:
    stopped = threading.Event()
    feed = TextFeed(idle_timeout_s=30)
    done = threading.Event()

    def read() -> None:
        list(feed.pieces(stop=stopped.is_set))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    stopped.set()
    assert done.wait(2)


# --- the voice model: one correlation id, many requests ----------------------------------------------------

from melstream.serving.voice_model import VoiceModel  # noqa: E402
from melstream_client import wire  # noqa: E402
from tests.unit.test_voice_model import WAIT_S, FakePb, FakeRequest, FakeTensor  # noqa: E402

START, END = 1, 2  # Triton's TRITONSERVER_REQUEST_FLAG_SEQUENCE_START / _END
PARAGRAPH = ("The first sentence is here. A second one follows it, with a clause. Then a third sentence comes along. "
             "And the fourth one is the longest of them all, by a few words. Fifth. The sixth ends it.")


class PieceRequest(FakeRequest):
    """A request of a text stream: its correlation id and sequence flags, as the stub's InferenceRequest has them."""

    def __init__(self, text: str, *, sequence: int, flags: int = 0, flush: bool = False, pace: float | None = None) -> None:
        inputs = {wire.TEXT.name: FakeTensor(wire.TEXT.name, np.array([text.encode()], dtype=object))}
        if flush:
            inputs[wire.FLUSH.name] = FakeTensor(wire.FLUSH.name, np.array([True]))
        if pace is not None:
            inputs[wire.PACE.name] = FakeTensor(wire.PACE.name, np.array([pace], np.float32))
        super().__init__(inputs)
        self._sequence, self._flags = sequence, flags

    def correlation_id(self) -> int:
        return self._sequence

    def flags(self) -> int:
        return self._flags


def text_voice(fast_addon, **kw) -> tuple[VoiceModel, FakePb]:
    pb = FakePb()
    model = VoiceModel(pb)
    model.serve("fast", fast_addon.build(), **kw)
    return model, pb


def frames_of(sender) -> np.ndarray:
    return np.concatenate([c[wire.MEL] for c in sender.chunks()])


def whole(model: VoiceModel, text: str) -> np.ndarray:
    req = PieceRequest(text, sequence=0)
    model.execute([req])
    assert req.sender.done.wait(WAIT_S)
    assert req.sender.kinds()[-1] == "final", req.sender.sent
    return frames_of(req.sender)


def wait_for_chunks(sender, *, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not sender.chunks() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the fake sender: the stream thread fills it
    return bool(sender.chunks())


def test_a_text_stream_speaks_as_its_pieces_come_and_equals_the_whole_text(fast_addon) -> None:
    model, _ = text_voice(fast_addon)
    expected = whole(model, PARAGRAPH)
    words = PARAGRAPH.split(" ")
    pieces = [" ".join(words[i:i + 3]) + " " for i in range(0, len(words), 3)]
    pieces[-1] = pieces[-1].rstrip()
    first = PieceRequest(pieces[0], sequence=42, flags=START)
    model.execute([first])
    later = []
    for i, piece in enumerate(pieces[1:-1]):
        req = PieceRequest(piece, sequence=42)
        model.execute([req])
        assert req.sender.done.wait(WAIT_S) and req.sender.kinds() == ["final"]  # taken, at once
        later.append(req)
        if i == len(pieces) // 2:
            assert wait_for_chunks(first.sender), "no audio by the middle of the text"
            assert not first.sender.done.is_set()
    assert first.sender.chunks(), "the first audio must come before the last piece is sent"
    end = PieceRequest(pieces[-1], sequence=42, flags=END)
    model.execute([end])
    assert first.sender.done.wait(WAIT_S) and end.sender.kinds() == ["final"]
    assert first.sender.kinds()[-1] == "final" and not first.sender.errors()
    got = frames_of(first.sender)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert model.active_streams == 0 and not model._feeds


def test_a_flush_speaks_the_text_so_far_and_the_stream_goes_on(fast_addon) -> None:
    model, _ = text_voice(fast_addon)
    first = PieceRequest("Hello there, my", sequence=7, flags=START)
    model.execute([first])
    model.execute([PieceRequest(" friend", sequence=7, flush=True)])
    assert wait_for_chunks(first.sender)  # spoken without the rest of the sentence
    model.execute([PieceRequest(" and goodbye.", sequence=7, flags=END)])
    assert first.sender.done.wait(WAIT_S)
    got = frames_of(first.sender)
    expected = np.concatenate([whole(model, "Hello there, my friend"), whole(model, "and goodbye.")])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_text_stream_errors_name_what_was_wrong(fast_addon) -> None:
    model, _ = text_voice(fast_addon)
    stray = PieceRequest("hello", sequence=99)  # no stream 99 was started
    model.execute([stray])
    assert stray.sender.done.wait(WAIT_S)
    (code, message), = stray.sender.errors()
    assert code == "INVALID_ARG" and "text stream 99 is not open" in message and "sequence_start" in message
    first = PieceRequest("Hello", sequence=5, flags=START)
    model.execute([first])
    late = PieceRequest(" there.", sequence=5, pace=1.5)
    model.execute([late])
    assert late.sender.done.wait(WAIT_S)
    assert "PACE may only come with a text stream's first request" in late.sender.errors()[0][1]
    again = PieceRequest("Hi", sequence=5, flags=START)
    model.execute([again])
    assert again.sender.done.wait(WAIT_S) and "already open" in again.sender.errors()[0][1]
    model.execute([PieceRequest(" there.", sequence=5, flags=END)])
    assert first.sender.done.wait(WAIT_S) and not first.sender.errors()
    after = PieceRequest("more", sequence=5)
    model.execute([after])
    assert after.sender.done.wait(WAIT_S) and "is not open" in after.sender.errors()[0][1]


def test_an_idle_text_stream_ends_with_an_error_and_frees_its_slot(fast_addon) -> None:
    model, pb = text_voice(fast_addon, max_streams=1)
    model.text_idle_timeout_s = 0.2
    first = PieceRequest("Hello there. How are", sequence=3, flags=START)
    model.execute([first])
    assert first.sender.done.wait(WAIT_S)
    (code, message), = first.sender.errors()
    assert code == "INVALID_ARG" and "no text for 0.2 s" in message
    assert model.active_streams == 0 and not model._feeds
    assert pb.metric("melstream_streams_total", outcome="error").value == 1


def test_a_cancelled_text_stream_stops_waiting_for_text(fast_addon) -> None:
    model, _ = text_voice(fast_addon)
    first = PieceRequest("Hello there. How are", sequence=11, flags=START)
    model.execute([first])
    first.cancel_after = 0  # the client went away: cancelled now
    assert first.sender.done.wait(WAIT_S)
    assert model.active_streams == 0 and not model._feeds
