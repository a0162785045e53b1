"""training.teacher: espeak-ng speaks a tiny corpus into teacher data (mels, phoneme durations, symbols)."""

from __future__ import annotations

import json

import numpy as np

from melstream.text import EOS, PAD
from training.teacher import build_teacher


def test_teacher_end_to_end(tmp_path):
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
