"""benchmarks/voice_quality.py end to end: the shipped voices on a tiny teacher set (espeak-ng speaks its test split)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from benchmarks.voice_quality import main, read_wav  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _teacher(root: Path, addon_dir: Path) -> None:
    """data/teacher layout: train (texts only matter), test with wavs + mels from those wavs."""
    import melstream
    from melstream_client.audio import log_mel

    spec = melstream.load_addon(addon_dir).audio
    splits = {
        "train": ["The cat sat on the mat.", "A dog sat on the rug.", "The dog saw the cat.", "The cat saw a dog on the mat."],
        "test": ["The dog sat on the mat.", "A cat saw the dog."],
    }
    rng = np.random.default_rng(0)
    for split, texts in splits.items():
        (root / split / "wavs").mkdir(parents=True)
        mels, offset = [], 0
        with open(root / split / "meta.jsonl", "w") as f:
            for i, text in enumerate(texts):
                uid = f"{split}-{i:05d}"
                wav = root / split / "wavs" / f"{uid}.wav"
                if split == "test":  # the quality tier has espeak-ng (`make sysdeps`)
                    exe = shutil.which("espeak-ng")
                    assert exe is not None, "espeak-ng is not installed: run `make sysdeps`"
                    subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True, timeout=30)
                    audio, _ = read_wav(wav)
                else:
                    audio = 0.1 * rng.standard_normal(spec.sample_rate)
                    with wave.open(str(wav), "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(spec.sample_rate)
                        w.writeframes((audio * 32767).astype("<i2").tobytes())
                mel = log_mel(audio, spec)
                mels.append(mel)
                f.write(json.dumps({"id": uid, "text": text, "tokens": [], "durations": [], "n_frames": len(mel), "offset": offset}) + "\n")
                offset += len(mel)
        np.save(root / split / "mels.npy", np.concatenate(mels))


def test_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    addons = ROOT / "addons"
    _teacher(tmp_path / "teacher", addons / "fastvoice")
    out = tmp_path / "quality"
    main(["--teacher", str(tmp_path / "teacher"), "--addons", str(addons), "--voices", "fastvoice", "tacovoice",
          "--limit", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| teacher-audio | 2 |" in printed and "| tacovoice+GL | 2 |" in printed
    with open(out / "quality.csv") as f:
        rows = {r["source"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["teacher-audio", "teacher-mel+GL", "fastvoice+GL", "tacovoice+GL"]
    for name in ("fastvoice+GL", "tacovoice+GL"):
        assert float(rows[name]["mel_l1"]) >= 0 and float(rows[name]["dur_err"]) >= 0 and float(rows[name]["rtf"]) > 0
    assert 0.0 <= float(rows["tacovoice+GL"]["monotonic"]) <= 1.0 and rows["tacovoice+GL"]["guard_hits"] != ""
    assert rows["fastvoice+GL"]["monotonic"] == "" and rows["teacher-audio"]["rtf"] == ""
    assert sorted(p.name for p in out.glob("alignment_*.png")) == ["alignment_test-00000.png", "alignment_test-00001.png"]
    assert (out / "quality.md").read_text().startswith("# Voice quality")
    stats = json.loads((out / "lm" / "lm_stats.json").read_text())
    assert stats["sentences"] == 4
    vocab = {line.split()[0] for line in (out / "lm" / "lm.dict").read_text().splitlines()}
    assert "rug" in vocab  # the LM vocabulary comes from the train texts
    with open(out / "quality_sentences.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    # word boundaries against the teacher's word events: every voice, every word of the two sentences
    assert "Word boundaries" in printed and "| fastvoice | 2 |" in printed
    with open(out / "words.csv") as f:
        words = {r["source"]: r for r in csv.DictReader(f)}
    assert list(words) == ["teacher phonemes", "fastvoice", "tacovoice"]
    for row in words.values():
        # "The dog sat on the mat." "A cat saw the dog.": 11 words, some of which espeak joins ("on the")
        assert 6 <= int(row["words"]) <= 11 and 0 < int(row["matched"]) <= int(row["words"])
        assert 0 <= float(row["mean_ms"]) <= float(row["p95_ms"])
    assert float(words["fastvoice"]["mean_ms"]) < 200  # fastvoice follows the teacher's durations


def test_teacher_words_cover_numbers_as_one_word() -> None:
    """espeak names the words it reads a number as by pieces of it ("$", "3.50", ".50"): they make one word."""
    from benchmarks.voice_quality import teacher_words

    words = teacher_words("It costs $3.50 today.", ["It", "costs", "$3.50", "today"])
    assert [w[0] for w in words if w is not None] == ["It", "costs", "$3.50", "today"]
    times = [t for w in words if w is not None for t in w[1:]]
    assert times == sorted(times) and times[0] >= 0
    assert words[2] is not None and words[2][2] - words[2][1] > 0.8  # "three dollars fifty cents" takes a while
