"""benchmarks/voice_quality.py: metric helpers (its end-to-end run on the shipped voices: tests/quality/test_voice_quality.py)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from benchmarks.voice_quality import (  # noqa: E402
    SourceResult,
    is_monotonic,
    mel_l1,
    peak_normalize,
    read_wav,
    spectrum_l1,
    table,
    time_resample,
)


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
