"""training/lm.py's recogniser: pocketsphinx with a trigram LM built here decodes espeak-ng's speech."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from tests.unit.test_lm import TRAIN  # noqa: E402
from training.lm import Recognizer, build_lm, to_int16, word_error_rate  # noqa: E402


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_lm(TRAIN, tmp_path_factory.mktemp("lm"))


def espeak_speech(path: Path, text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's audio of ``text`` (the quality tier needs espeak-ng: `make sysdeps`)."""
    exe = shutil.which("espeak-ng")
    assert exe is not None, "espeak-ng is not installed: run `make sysdeps`"
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=30)
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float64) / 32768.0, f.getframerate()


def test_recognizer_loads_lm_and_decodes(lm: tuple[Path, Path], tmp_path: Path) -> None:
    recognizer = Recognizer(*lm)
    text = "the quick brown fox jumps over the lazy dog"
    audio, rate = espeak_speech(tmp_path / "speech.wav", text)
    hyp = recognizer.transcribe(audio, rate)
    assert all(w in {line.split()[0].split("(")[0] for line in lm[1].read_text().splitlines()} for w in hyp.split())
    assert word_error_rate(text, hyp) <= 0.5, hyp
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    assert isinstance(recognizer.transcribe(tone, 16000), str)
    assert recognizer.transcribe(to_int16(tone), 16000) == recognizer.transcribe(tone, 16000)
    assert recognizer.transcribe(np.zeros(0), 22050) == ""
