"""Teacher data from espeak-ng: audio, phoneme tokens, per-token frame durations and log-mels.

    python -m training.teacher --corpus data/corpus.json --out data/teacher [--limit N]

For every corpus sentence, :meth:`melstream.espeak.Espeak.align` gives the audio (22050 Hz), the phoneme
tokens and their durations in hop-256 frames; :func:`melstream.audio.log_mel` gives the mel (80 bins).
Sentences whose synthesis events do not match their phonemes are dropped and counted.  Output, no pickle:

* ``{out}/{split}/meta.jsonl``: one JSON object per utterance: ``id``, ``text``, ``tokens`` (list of str),
  ``durations`` (list of int, summing to ``n_frames``), ``n_frames``, ``offset``;
* ``{out}/{split}/mels.npy``: float32 ``[sum n_frames, 80]``, utterance rows ``offset:offset + n_frames``;
* ``{out}/test/wavs/{id}.wav``: 16-bit PCM of the test split;
* ``{out}/symbols.json``: ``["_", "~", *sorted tokens of every split]``, the ``text.symbols`` of an
  ``espeak-phonemes`` front end;
* ``{out}/info.json``: audio spec, counts, hours.

Runs in one process (espeak-ng is process-global; do not fork after it is initialised).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from melstream.espeak import HOP_LENGTH, get_espeak
from melstream.text import EOS, PAD
from melstream_client.audio import log_mel, write_wav
from melstream_client.spec import AudioSpec

__all__ = ["SPEC", "SPLITS", "build_teacher", "main"]

SPEC = AudioSpec(22050, 256, 1024, 1024, 80, 0.0, 8000.0)
SPLITS = ("train", "val", "test")


def _fit(mel: np.ndarray, n_frames: int) -> np.ndarray:
    """Trim or pad (repeating the last frame, or the log floor when empty) ``mel`` to ``n_frames`` rows."""
    if len(mel) >= n_frames:
        return mel[:n_frames]
    fill = mel[-1:] if len(mel) else np.full((1, SPEC.n_mels), np.log(1e-5), np.float32)
    return np.concatenate([mel, np.repeat(fill, n_frames - len(mel), axis=0)])


def build_split(name: str, sentences: list[str], out: Path, *, voice: str = "en-us", wavs: bool = False) -> dict[str, Any]:
    espeak = get_espeak(voice)
    if espeak.sample_rate != SPEC.sample_rate or HOP_LENGTH != SPEC.hop_length:
        raise RuntimeError(f"espeak-ng speaks at {espeak.sample_rate} Hz; the teacher spec needs {SPEC.sample_rate} Hz")
    directory = out / name
    directory.mkdir(parents=True, exist_ok=True)
    if wavs:
        (directory / "wavs").mkdir(exist_ok=True)
    mels: list[np.ndarray] = []
    tokens_seen: set[str] = set()
    offset = dropped = 0
    samples = 0
    with (directory / "meta.jsonl").open("w", encoding="utf-8") as meta:
        for index, text in enumerate(sentences):
            uid = f"{name}-{index:05d}"
            try:
                audio, tokens, durations = espeak.align(text)
            except ValueError:
                dropped += 1
                continue
            n_frames = int(durations.sum())
            if n_frames == 0:
                dropped += 1
                continue
            mels.append(_fit(log_mel(audio, SPEC), n_frames))
            record = {
                "id": uid,
                "text": text,
                "tokens": tokens,
                "durations": durations.tolist(),
                "n_frames": n_frames,
                "offset": offset,
            }
            meta.write(json.dumps(record, ensure_ascii=False) + "\n")
            offset += n_frames
            samples += len(audio)
            tokens_seen.update(tokens)
            if wavs:
                write_wav(directory / "wavs" / f"{uid}.wav", audio, espeak.sample_rate)
    array = np.concatenate(mels) if mels else np.zeros((0, SPEC.n_mels), np.float32)
    np.save(directory / "mels.npy", array.astype(np.float32, copy=False))
    return {
        "sentences": len(mels),
        "dropped": dropped,
        "frames": offset,
        "hours": samples / espeak.sample_rate / 3600,
        "tokens": sorted(tokens_seen),
    }


def build_teacher(corpus: dict[str, Any], out: Path, *, limit: int | None = None, voice: str = "en-us") -> dict[str, Any]:
    """Write the teacher data for ``corpus`` (``{"splits": {split: [sentence, ...]}}``) under ``out``."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, Any] = {}
    inventory: set[str] = set()
    for name in SPLITS:
        sentences = list(corpus["splits"].get(name, []))[:limit]
        result = build_split(name, sentences, out, voice=voice, wavs=name == "test")
        inventory.update(result.pop("tokens"))
        splits[name] = result
    clash = inventory & {PAD, EOS}
    if clash:
        raise RuntimeError(f"espeak produced tokens {sorted(clash)} that clash with the pad/end symbols")
    symbols = [PAD, EOS, *sorted(inventory)]
    (out / "symbols.json").write_text(json.dumps(symbols, ensure_ascii=False) + "\n", encoding="utf-8")
    info = {
        "audio": {
            "sample_rate": SPEC.sample_rate, "hop_length": SPEC.hop_length, "win_length": SPEC.win_length,
            "n_fft": SPEC.n_fft, "n_mels": SPEC.n_mels, "fmin": SPEC.fmin, "fmax": SPEC.fmax,
        },  # fmt: skip
        "voice": voice,
        "frontend": "espeak-phonemes",
        "num_symbols": len(symbols),
        "splits": splits,
        "sentences": sum(s["sentences"] for s in splits.values()),
        "dropped": sum(s["dropped"] for s in splits.values()),
        "hours": sum(s["hours"] for s in splits.values()),
        "seconds": time.perf_counter() - started,
    }
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus.json"))
    parser.add_argument("--out", type=Path, default=Path("data/teacher"))
    parser.add_argument("--limit", type=int, default=None, help="at most N sentences per split")
    parser.add_argument("--voice", default="en-us")
    args = parser.parse_args(argv)
    corpus = json.loads(args.corpus.read_text(encoding="utf-8"))
    info = build_teacher(corpus, args.out, limit=args.limit, voice=args.voice)
    per_split = ", ".join(f"{name} {s['sentences']} (dropped {s['dropped']}, {s['hours']:.2f} h)" for name, s in info["splits"].items())
    print(
        f"{info['sentences']} sentences, {info['dropped']} dropped (event mismatch), {info['hours']:.2f} hours of speech, "
        f"{info['num_symbols']} symbols, {info['seconds']:.1f} s; {per_split}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
