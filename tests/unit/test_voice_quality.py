"""benchmarks/voice_quality.py: metric helpers, and an end-to-end run on a tiny synthetic teacher set."""

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

from benchmarks.voice_quality import (  # noqa: E402
    SourceResult,
    is_monotonic,
    main,
    mel_l1,
    peak_normalize,
    read_wav,
    spectrum_l1,
    table,
    time_resample,
)

ROOT = Path(__file__).resolve().parents[2]


def test_time_resample_and_mel_l1() -> None:
    mel = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(time_resample(mel, 4), mel)
    up = time_resample(mel, 7)
    assert up.shape == (7, 3)
    np.testing.assert_allclose(up[0], mel[0])
    np.testing.assert_allclose(up[-1], mel[-1])
    np.testing.assert_allclose(up[1], (mel[0] + mel[1]) / 2)
    assert time_resample(mel, 1).shape == (1, 3)
    assert mel_l1(mel, mel) == 0.0
    assert mel_l1(mel + 2, mel) == pytest.approx(2.0)
    assert mel_l1(up, mel) == pytest.approx(0.0, abs=1e-6)  # a stretched copy is the same after resampling
    assert np.isnan(mel_l1(np.zeros((0, 3)), mel))
    assert spectrum_l1(np.repeat(mel, 2, axis=0), mel) == pytest.approx(0.0)
    assert spectrum_l1(mel - 1, mel) == pytest.approx(1.0)


def test_is_monotonic() -> None:
    eye = np.eye(5)
    assert is_monotonic(eye)
    assert is_monotonic(np.repeat(eye, 3, axis=0))
    assert not is_monotonic(eye[[0, 1, 2, 1, 3, 4]])
    assert is_monotonic(np.zeros((0, 5)))


def test_source_result_and_table() -> None:
    res = SourceResult("x", timed=True)
    assert res.add_transcript(["a", "b"], ["a", "c"]) == 0.5
    res.add_transcript(["a", "b", "c", "d"], ["a", "b", "c", "d"])
    res.synth_s, res.audio_s = 1.0, 4.0
    row = res.row()
    assert row["wer"] == pytest.approx(1 / 6) and row["wer_mean"] == pytest.approx(0.25)
    assert row["rtf"] == 0.25 and row["mel_l1"] is None and row["monotonic"] is None
    text = table([row])
    assert text.splitlines()[0].startswith("| source | n | wer") and "| x | 2 | 0.167 | 0.250 |" in text


def test_read_wav_and_peak(tmp_path: Path) -> None:
    x = 0.25 * np.sin(np.linspace(0, 20, 1000))
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(22050)
        f.writeframes((x * 32767).astype("<i2").tobytes())
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22050 and np.max(np.abs(y - x)) < 1e-4
    assert np.max(np.abs(peak_normalize(y))) == pytest.approx(0.9)
    assert not peak_normalize(np.zeros(3)).any()


def _teacher(root: Path, addon_dir: Path) -> None:
    """data/teacher layout: train (texts only matter), test with wavs + mels from those wavs."""
    import melstream
    from melstream.audio import log_mel

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
                if shutil.which("espeak-ng") and split == "test":
                    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True, timeout=30)
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
