"""The training pipeline end to end on a tiny corpus, in a few steps (what `make voices` does at scale)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import melstream
from melstream.serving.repo import build_repository
from training import model_card, train_attention, train_duration
from training.teacher import build_teacher

TRAIN = ["The cat sat on the mat.", "Return the value of the named attribute.", "Open a file, and read it.",
         "This is a small test.", "Numbers like 42 are read aloud.", "Create a new list; then sort it!",
         "Why does the sun shine?", "Close the socket and exit."]


def test_pipeline_end_to_end_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpus = {"splits": {"train": TRAIN, "val": TRAIN[:2], "test": TRAIN[2:4]}}
    info = build_teacher(corpus, tmp_path / "teacher")
    # espeak-ng carries state between utterances; after many earlier calls in this process it has been
    # seen to desynchronise one sentence's events, which the builder then drops (and counts)
    assert info["sentences"] + info["dropped"] == 12 and info["dropped"] <= 1
    addons = tmp_path / "addons"
    common = ["--data", str(tmp_path / "teacher"), "--steps", "3", "--threads", "1"]
    train_duration.main([*common, "--out", str(addons / "fastvoice")])
    train_attention.main([*common, "--out", str(addons / "tacovoice")])
    for voice in ("fastvoice", "tacovoice"):
        meta = json.loads((addons / voice / "training.json").read_text())
        assert meta["steps"] == 3 and meta["train_utterances"] == info["splits"]["train"]["sentences"]
        addon = melstream.load_addon(addons / voice)
        assert addon.text["symbols"] == json.loads((tmp_path / "teacher" / "symbols.json").read_text())
        mel = addon.build().synthesize("The cat sat.")
        assert mel.ndim == 2 and mel.shape[1] == 80 and len(mel) > 0 and np.isfinite(mel).all()
        (addons / voice / "MODEL_CARD.md").write_text(model_card.card(addons / voice, None))
        assert "## Licences" in (addons / voice / "MODEL_CARD.md").read_text()
    report = build_repository(addons, tmp_path / "repo")
    assert report.voices == ["fastvoice", "tacovoice"] and not report.refused
