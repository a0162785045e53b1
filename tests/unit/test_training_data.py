"""training.corpus: sentence cleaning and splits (the espeak-ng teacher: tests/quality/test_teacher.py)."""

from __future__ import annotations

import pytest

from training.corpus import clean_corpus, clean_sentence, split_corpus, split_sentences


@pytest.mark.parametrize(
    "sentence",
    [
        "Return the number of items in the queue.",
        "Is this a question that can be answered?",
        "The  resulting\n value is cached for 30 seconds.",
        "Caf\u00e9 owners don't like na\u00efve customers.",
    ],
)
def test_clean_keeps_prose(sentence):
    cleaned = clean_sentence(sentence)
    assert cleaned is not None and "  " not in cleaned and "\n" not in cleaned and cleaned.isascii()


@pytest.mark.parametrize(
    "sentence",
    [
        "Too short.",  # 2 words
        " ".join(["word"] * 31) + ".",  # 31 words
        "Call foo(bar) to get the result.",  # brackets
        "Set x = 3 before the loop starts.",  # =
        "Use the some_name attribute for this.",  # underscore
        ">>> print the value of it.",
        "See https://example.org for the details.",
        "It lives in os.path like the others.",
        "return the value of the thing.",  # lower-case start
        "Return the value of the thing",  # no final punctuation
        "THE SOFTWARE IS PROVIDED AS IS.",  # shouting
        "Some \u4e2d\u6587 text is in here.",  # not ASCII after NFKD
        "The values 1 2 3 4 5 6 7 8 are.",  # mostly digits
        "Use ``code`` here for the result.",  # markup
    ],
)
def test_clean_drops_code_and_noise(sentence):
    assert clean_sentence(sentence) is None


def test_split_sentences_and_corpus_dedupe_sort():
    text = "First one is here. Second one is here!\n\nThird one\nis here? fourth stays glued."
    assert list(split_sentences(text)) == ["First one is here.", "Second one is here!", "Third one is here? fourth stays glued."]
    texts = ["Beta sentence is good here. Alpha sentence is good here.", "alpha sentence is good here. Alpha sentence is good here."]
    assert clean_corpus(texts) == ["Alpha sentence is good here.", "Beta sentence is good here."]


def test_split_corpus_is_seeded_and_disjoint():
    sentences = [f"Sentence number {i} is here." for i in range(500)]
    a = split_corpus(sentences, seed=7, test=100, val=100, max_train=250)
    b = split_corpus(list(reversed(sentences)), seed=7, test=100, val=100, max_train=250)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [250, 100, 100]
    assert len(set(a["train"]) | set(a["val"]) | set(a["test"])) == 450
    assert split_corpus(sentences, seed=8, test=100, val=100)["test"] != a["test"]
