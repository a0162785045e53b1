"""training/lm.py: normalisation, WER, the ARPA trigram + dictionary, resampling (decoding espeak-ng speech with
pocketsphinx: tests/quality/test_recognizer.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from training.lm import (  # noqa: E402
    EOS,
    WittenBellTrigram,
    build_lm,
    edit_distance,
    load_pronunciations,
    normalize_words,
    resample,
    to_int16,
    word_error_rate,
)

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps in the sun, doesn't it?",
    "The fox is quick -- and brown!",
    "Dogs' dinners: the dog eats 2 bones.",
    "Zxqvy blorptastic the dog barks.",
]
HELD_OUT = "An elephant trumpets loudly."


def parse_arpa(text: str) -> tuple[dict[int, int], dict[int, dict[tuple[str, ...], tuple[float, float | None]]]]:
    lines = text.splitlines()
    assert "\\data\\" in lines and lines[-1] == "\\end\\" or "\\end\\" in lines
    counts: dict[int, int] = {}
    grams: dict[int, dict[tuple[str, ...], tuple[float, float | None]]] = {}
    order = 0
    for line in lines:
        if line.startswith("ngram "):
            n, c = line[len("ngram "):].split("=")
            counts[int(n)] = int(c)
        elif line.endswith("-grams:"):
            order = int(line[1:line.index("-")])
            grams[order] = {}
        elif line.strip() and order and not line.startswith("\\"):
            parts = line.split("\t")
            assert len(parts) in (2, 3), line
            words = tuple(parts[1].split())
            assert len(words) == order, line
            grams[order][words] = (float(parts[0]), float(parts[2]) if len(parts) == 3 else None)
    return counts, grams


def backoff_prob(grams: dict[int, dict[tuple[str, ...], tuple[float, float | None]]], word: str, history: tuple[str, ...]) -> float:
    """log10 P(word | history) by the ARPA backoff rule."""
    key = (*history, word)
    if key in grams[len(key)]:
        return grams[len(key)][key][0]
    bow = grams[len(history)].get(history, (0.0, 0.0))[1] or 0.0 if history else 0.0
    return bow + backoff_prob(grams, word, history[1:])


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_lm(TRAIN, tmp_path_factory.mktemp("lm"))


# ------------------------------------------------------------------------------------------ text / WER


def test_normalize_words() -> None:
    assert normalize_words("Hello,   World!") == ["hello", "world"]
    assert normalize_words("Don't  stop -- 'tis the dogs' toy.") == ["don't", "stop", "tis", "the", "dogs", "toy"]
    assert normalize_words("It’s a well-known café") == ["it's", "a", "well", "known", "cafe"]
    assert normalize_words("He paid $5 in 1990.") == ["he", "paid", "five", "dollars", "in", "one", "thousand", "nine",
                                                     "hundred", "ninety"]
    assert normalize_words("") == [] and normalize_words(" ... !? ") == []


def test_word_error_rate_edge_cases() -> None:
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "anything at all") == 1.0
    assert word_error_rate("the cat sat", "the cat sat") == 0.0
    assert word_error_rate("The cat, sat.", "the CAT sat") == 0.0  # normalised first
    assert word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)  # substitution
    assert word_error_rate("the cat sat", "the cat sat down there") == pytest.approx(2 / 3)  # insertions
    assert word_error_rate("the cat sat", "cat") == pytest.approx(2 / 3)  # deletions
    assert word_error_rate("a b", "c d e f") == pytest.approx(2.0)  # can exceed 1
    assert word_error_rate("the cat sat", "") == 1.0
    assert edit_distance(["a", "b", "c"], ["b", "c", "d"]) == 2


# ------------------------------------------------------------------------------------------ LM + dictionary


def test_arpa_is_valid_and_normalised(lm: tuple[Path, Path]) -> None:
    lm_path, _ = lm
    counts, grams = parse_arpa(lm_path.read_text())
    assert sorted(counts) == [1, 2, 3]
    for n in (1, 2, 3):
        assert counts[n] == len(grams[n]) > 0
        for words, (logp, bow) in grams[n].items():
            assert logp <= 0.0
            if n < 3:
                assert bow is not None and bow <= 0.0, words
            else:
                assert bow is None, words
            if n > 1:  # every listed n-gram's prefix and suffix are listed one order down
                assert words[:-1] in grams[n - 1] and words[1:] in grams[n - 1], words
    assert grams[1][("<s>",)][0] == -99.0
    vocab = [w for (w,) in grams[1] if w != "<s>"]
    for history in [(), ("<s>",), ("the",), ("<s>", "the"), ("the", "dog"), ("lazy", "fox"), ("fox", "fox")]:
        total = sum(10 ** backoff_prob(grams, w, history) for w in vocab)
        assert total == pytest.approx(1.0, abs=2e-5), history


def test_dictionary_matches_vocabulary_and_drops_unknown_words(lm: tuple[Path, Path]) -> None:
    lm_path, dict_path = lm
    _, grams = parse_arpa(lm_path.read_text())
    vocab = {w for (w,) in grams[1]} - {"<s>", EOS}
    entries = [line.split() for line in dict_path.read_text().splitlines()]
    assert {e[0].split("(")[0] for e in entries} == vocab
    assert {"fox", "doesn't", "dogs", "two", "bones"} <= vocab
    assert "zxqvy" not in vocab and "blorptastic" not in vocab
    assert not set(normalize_words(HELD_OUT)) & (vocab - {"the"})
    prons = load_pronunciations()
    assert [" ".join(e[1:]) for e in entries if e[0].split("(")[0] == "the"] == prons["the"]
    stats = json.loads((lm_path.parent / "lm_stats.json").read_text())
    assert stats["dropped_tokens"] == 2 and stats["dropped_types"] == 2
    assert set(stats["dropped_examples"]) == {"zxqvy", "blorptastic"}


def test_witten_bell_probabilities() -> None:
    model = WittenBellTrigram([["a", "b"], ["a", "c"]])
    # unigrams a a b c </s> </s>: 6 tokens, 4 types (V = 4) -> P(b) = (1 + 4 * 1/4) / (6 + 4)
    # history "a" (bigram level): c=2, T=2 -> P(b|a) = (1 + 2 P(b)) / (2 + 2)
    p_b = (1 + 4 * 0.25) / (6 + 4)
    assert model.prob("b") == pytest.approx(p_b)
    assert model.prob("b", ("a",)) == pytest.approx((1 + 2 * p_b) / 4)
    assert model.gamma(("a",)) == pytest.approx(0.5)
    assert model.gamma(("never",)) == 1.0
    with pytest.raises(ValueError):
        WittenBellTrigram([[]])


# ------------------------------------------------------------------------------------------ audio


def test_resample_length_and_frequency() -> None:
    rate_in, rate_out = 22050, 16000
    t = np.arange(rate_in // 2) / rate_in
    for f in (440.0, 3000.0):
        y = resample(np.sin(2 * np.pi * f * t), rate_in, rate_out)
        assert len(y) == math.ceil(len(t) * rate_out / rate_in)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        assert abs(np.argmax(spectrum) * rate_out / len(y) - f) < 4.0
        ref = np.sin(2 * np.pi * f * np.arange(len(y)) / rate_out)
        assert np.max(np.abs(y[300:-300] - ref[300:-300])) < 2e-3
    above = resample(np.sin(2 * np.pi * 9000.0 * t), rate_in, rate_out)  # above the new Nyquist: removed
    assert np.max(np.abs(above[300:-300])) < 0.01
    assert len(resample(np.zeros(0), rate_in, rate_out)) == 0
    x = np.random.default_rng(0).standard_normal(100)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert len(resample(x, 16000, 22050)) == 138


def test_to_int16() -> None:
    pcm = to_int16(np.array([0.0, 0.5, -1.5, 2.0]))
    assert pcm.dtype == np.int16 and pcm.tolist() == [0, 16384, -32768, 32767]
    assert np.abs(to_int16(np.array([0.1, -0.2]), peak=0.9)).max() == round(0.9 * 32767)
