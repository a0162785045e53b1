"""training.corpus (sentence cleaning, splits) and training.teacher (espeak-ng teacher data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from melstream.errors import TextError
from melstream.espeak import get_espeak
from melstream.text import EOS, PAD
from training.corpus import clean_corpus, clean_sentence, split_corpus, split_sentences
from training.teacher import build_teacher


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


def test_teacher_end_to_end(tmp_path):
    try:
        get_espeak()
    except TextError as error:
        pytest.skip(str(error))
    corpus = {
        "splits": {
            "train": ["Return the number of items.", "Hello, world. How are you?", "This is a test of 42 things."],
            "val": ["Open the file for reading."],
            "test": ["Close the socket when done.", "The quick brown fox jumps over the lazy dog!"],
        }
    }
    out = tmp_path / "teacher"
    info = build_teacher(corpus, out)
    assert info["sentences"] == 6 and info["dropped"] == 0 and info["hours"] > 0
    symbols = json.loads((out / "symbols.json").read_text())
    assert symbols[:2] == [PAD, EOS] and symbols[2:] == sorted(symbols[2:]) and len(set(symbols)) == len(symbols)
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        records = [json.loads(line) for line in (out / split / "meta.jsonl").read_text().splitlines()]
        mels = np.load(out / split / "mels.npy")
        assert len(records) == n and mels.dtype == np.float32 and mels.shape[1] == 80
        offset = 0
        for record in records:
            assert record["offset"] == offset and sum(record["durations"]) == record["n_frames"] > 0
            assert len(record["tokens"]) == len(record["durations"]) and set(record["tokens"]) <= set(symbols)
            assert record["text"] in corpus["splits"][split] and record["id"].startswith(split)
            offset += record["n_frames"]
        assert offset == len(mels) and np.isfinite(mels).all()
        wavs = sorted(p.name for p in (out / split / "wavs").glob("*.wav")) if split == "test" else []
        assert wavs == ([f"{r['id']}.wav" for r in records] if split == "test" else [])
    assert not (out / "train" / "wavs").exists()
