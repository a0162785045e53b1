"""Words of a sentence (issue 20): pairing espeak's phoneme words with the text's words costs work in proportion
to the sentence's length, and nothing at all unless the words are read (word timestamps).

The pairing (melstream.text._pair_words) is driven here with synthetic sound strings, so no espeak-ng is needed;
tests/integration/test_words_espeak.py pairs real espeak output."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import melstream.text as text_module
from melstream.text import CharFrontend, Sentence, Word, _pair_words

Plan = list[tuple[int, int]]


# ------------------------------------------------------------------------------------------------ pairing


def synthetic(n_words: int, seed: int = 0) -> tuple[list[list[str]], list[str], Plan]:
    """A sentence of at least ``n_words`` text words: what each reads alone as, the sentence's phoneme words, and
    the groups that made them.  Most words are said as read alone; some a little differently (a reduced last
    vowel), some as several words (a number), and some pairs joined into one phoneme word ("to be").  The same
    seed gives the same words in the same order whatever ``n_words`` is: a longer sentence extends a shorter one."""
    rng = random.Random(seed)

    def syllables(k: int) -> str:
        return "".join(rng.choice("ptkbdgmnszflrwjv") + rng.choice("aeiouAEIOU3") for _ in range(k))

    alone: list[list[str]] = []
    sounds: list[str] = []
    plan: Plan = []
    while len(alone) < n_words:
        kind = rng.random()
        if kind < 0.6:  # said as read alone
            word = syllables(rng.randint(1, 3))
            alone.append([word])
            sounds.append(word)
            plan.append((1, 1))
        elif kind < 0.7:  # said a little differently in the sentence
            word = syllables(rng.randint(2, 3))
            alone.append([word])
            sounds.append(word[:-1] + "@")
            plan.append((1, 1))
        elif kind < 0.8:  # read as several words (a number)
            words = [syllables(2) for _ in range(rng.randint(2, 5))]
            alone.append(words)
            sounds += words
            plan.append((1, len(words)))
        else:  # two short words joined into one phoneme word
            first, second = syllables(1), syllables(2)
            alone += [[first], [second]]
            sounds.append(first[:-1] + "@" + second)
            plan.append((2, 1))
    return alone, sounds, plan


def counting_comparisons(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count every comparison the pairing makes: of sounds (their difference) and of words said exactly as alone."""
    calls = {"count": 0}

    def counted(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls["count"] += 1
            return function(*args)
        return wrapper

    monkeypatch.setattr(text_module, "_differ", counted(text_module._differ))
    monkeypatch.setattr(text_module, "_exact", counted(text_module._exact))
    return calls


@pytest.mark.parametrize(("alone", "sounds", "plan"), [
    ([], [], []),  # no words
    ([["hEloU"]], ["hEloU"], [(1, 1)]),  # one word, said as alone
    ([["hEloU"]], ["h@loU"], [(1, 1)]),  # one word, said differently: still that word
    ([["tu:"], ["bi:"], ["baUnd"]], ["t@bi:", "baUnd"], [(2, 1), (1, 1)]),  # "to be" joined
    ([["It"], ["kOsts"], ["Tri:", "dA:l3z", "fIfti", "sEnts"], ["tu:deI"]],  # "$3.50": one word over four
     ["It", "kOsts", "Tri:", "dA:l3z", "fIfti", "sEnts", "tu:deI"], [(1, 1), (1, 1), (1, 4), (1, 1)]),
    ([["Its"], ["wVn", "mIli@n", "tu:", "hVndrI2d", "T3:ti", "fo@", "TaUz@nd", "faIv", "sIksti"], ["pi:p@L"]],  # 9 words
     ["Its", "wVn", "mIli@n", "tu:", "hVndrI2d", "T3:ti", "fo@", "TaUz@nd", "faIv", "sIksti", "pi:p@L"],
     [(1, 1), (1, 9), (1, 1)]),
    ([["hEloU"], [], ["w3:ld"]], ["hEloU", "w3:ld"], [(1, 1), (1, 0), (1, 1)]),  # espeak says nothing for a word
    ([["hEloU"], ["Dx"], ["w3:ld"]], ["hEloU", "w3:ld"], [(1, 1), (2, 1)]),  # ... only in the sentence: joined
    ([["a"], ["q"], ["b"], ["c"]], ["a", "kju:", "ju:", "kju:", "b", "c"], [(1, 1), (1, 3), (1, 1), (1, 1)]),
    ([["a"], ["b"]], ["a", "b", "bi:"], [(1, 1), (1, 2)]),  # more at the end than read alone
])
def test_pairing_edges(alone: list[list[str]], sounds: list[str], plan: Plan) -> None:
    assert _pair_words(alone, sounds) == plan


@pytest.mark.parametrize(("alone", "sounds"), [
    ([], ["hEloU"]),  # phoneme words but no text word
    ([["a"]], ["x"] * 7),  # more than one word can make
    ([["a"], ["b"]], ["x"] * 13),
])
def test_nothing_fits(alone: list[list[str]], sounds: list[str]) -> None:
    assert _pair_words(alone, sounds) is None


@pytest.mark.parametrize("seed", range(5))
def test_a_long_sentence_pairs_as_it_was_made(seed: int) -> None:
    alone, sounds, plan = synthetic(400, seed)
    assert _pair_words(alone, sounds) == plan


def repeated(times: int, seed: int = 0) -> tuple[list[list[str]], list[str], Plan]:
    """:func:`synthetic` 's 100 words, ``times`` over: sentences whose every stretch is as hard as any other's."""
    alone, sounds, plan = synthetic(100, seed)
    return alone * times, sounds * times, plan * times


@pytest.mark.parametrize("seed", range(3))
def test_pairing_work_grows_linearly(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Counted, not timed: the comparisons for 8n words stay within 1.5 times 8 of those for n."""
    calls = counting_comparisons(monkeypatch)
    counts = []
    for times in (1, 2, 4, 8):
        alone, sounds, plan = repeated(times, seed)
        calls["count"] = 0
        assert _pair_words(alone, sounds) == plan
        counts.append(calls["count"])
    assert counts[0] > 0
    assert counts[-1] <= 8 * 1.5 * counts[0], counts


def test_the_count_sees_an_unbounded_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measure above can fail: searching without bounds (the rest of the sentence from every word that is not
    said as alone) makes the count grow more than 1.5 times 8 times for 8 times the words."""
    monkeypatch.setattr(text_module, "_REACH", 10**9)
    monkeypatch.setattr(text_module, "_LOOK_PAST", 10**9)
    calls = counting_comparisons(monkeypatch)
    counts = []
    for times in (1, 8):
        alone, sounds, _ = repeated(times)
        calls["count"] = 0
        _pair_words(alone, sounds)
        counts.append(calls["count"])
    assert counts[1] > 8 * 1.5 * counts[0], counts


# ------------------------------------------------------------------------------------------ lazy words


def test_words_given_as_a_function_are_made_on_first_read_once() -> None:
    made = []

    def make() -> list[Word]:
        made.append(1)
        return [Word("hello", 0, 5)]

    sentence = Sentence("hello", np.arange(5), make)
    assert made == [] and "not made yet" in repr(sentence)
    assert sentence.words == (Word("hello", 0, 5),)
    assert sentence.words == (Word("hello", 0, 5),)
    assert made == [1]
    assert "hello" in repr(sentence) and "not made yet" not in repr(sentence)


def test_words_are_made_once_however_many_threads_read_them() -> None:
    started, release = threading.Event(), threading.Event()
    made = []

    def make() -> tuple[Word, ...]:
        made.append(1)
        started.set()
        release.wait(5)
        return (Word("a", 0, 1),)

    sentence = Sentence("a", np.arange(1), make)
    seen: list[tuple[Word, ...]] = []
    readers = [threading.Thread(target=lambda: seen.append(sentence.words)) for _ in range(4)]
    for reader in readers:
        reader.start()
    assert started.wait(5)
    release.set()
    for reader in readers:
        reader.join(5)
    assert made == [1] and seen == [(Word("a", 0, 1),)] * 4


def test_a_sentence_cannot_be_changed() -> None:
    sentence = Sentence("a", np.arange(1), (Word("a", 0, 1),))
    for name in ("text", "ids", "words", "_words"):
        with pytest.raises(AttributeError):
            setattr(sentence, name, None)
    with pytest.raises(AttributeError):
        del sentence.text
    assert sentence.words == (Word("a", 0, 1),) and sentence.text == "a"


class WordCounting:
    """A front end whose sentences count how often their words are made."""

    def __init__(self, frontend: CharFrontend) -> None:
        self.frontend = frontend
        self.end_id = frontend.end_id
        self.symbols = frontend.symbols
        self.max_chars = frontend.max_chars
        self.made = 0

    def sentences(self, text: str | bytes) -> Iterator[Sentence]:
        for sentence in self.frontend.sentences(text):
            yield Sentence(sentence.text, sentence.ids, self._words(sentence))

    def _words(self, sentence: Sentence) -> Callable[[], tuple[Word, ...]]:
        def make() -> tuple[Word, ...]:
            self.made += 1
            return sentence.words
        return make

    def normalize(self, text: str | bytes) -> str:
        return self.frontend.normalize(text)

    def encode(self, text: str | bytes) -> np.ndarray:
        return self.frontend.encode(text)


@pytest.mark.parametrize("lazy", [True, False])
def test_a_stream_without_word_timestamps_makes_no_words(fast_addon, monkeypatch: pytest.MonkeyPatch, lazy: bool) -> None:
    from melstream.blocks import StreamablePipeline

    monkeypatch.setattr(StreamablePipeline, "lazy_text", lazy)
    pipeline = fast_addon.build()
    counting = WordCounting(pipeline.frontend)
    pipeline.frontend = counting
    text = "One two. Three four, five. " * 4
    assert sum(len(c["mel"]) for c in pipeline.stream_outputs(text)) > 0
    assert counting.made == 0
    words = [w for c in pipeline.stream_outputs(text, words=True) for w in c["words"]]
    assert counting.made > 0 and [w[0] for w in words][:3] == ["one", "two", "three"]
