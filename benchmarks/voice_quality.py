"""Measurable quality of trained voices against their teacher: ASR word error rate, mel distance,
duration error, speed and (attention voices) alignment health, on held-out test sentences.

    python benchmarks/voice_quality.py --teacher data/teacher --addons addons \
        [--voices fastvoice tacovoice] [--limit 100] [--out out/quality] [--lw W] [--beam B] [--wip P]

A trigram LM (training/lm.py) is built from the TRAIN split's texts only, and pocketsphinx (en-us
acoustic model) transcribes, for each test sentence:

* ``teacher-audio``   the teacher's own recording (``test/wavs/<id>.wav``): the ceiling of this ASR setup;
* ``teacher-mel+GL``  the teacher's mel through the Griffin-Lim vocoder: the ceiling for any voice here;
* ``<voice>+GL``      ``load_addon(addons/<voice>).build().synthesize(text)`` through the same vocoder.

Audio is peak-normalised to 0.9 before recognition.  Columns:

* ``wer``: corpus word error rate (total edits / total reference words); ``wer_mean``: mean per sentence;
* ``mel_l1``: mean |voice - teacher| over frames and bins, the voice's mel linearly time-resampled to the
  teacher's length; ``mel_l1_same_len``: the same over only the sentences whose lengths already match
  (no resampling, ``n_same_len`` of them); ``mel_l1_spectrum``: alignment-free, |mean spectrum difference|;
* ``dur_err``: mean |frames_voice - frames_teacher| / frames_teacher;
* ``rtf``: synthesis seconds / audio seconds (acoustic model only); ``vocoder_rtf``: Griffin-Lim alone;
* ``monotonic``: fraction of sentences whose attention argmax never decreases; ``guard_hits``: utterances
  ended by the AttentionDecoder's max-frames guard (attention voices only).

Word boundaries (issue 13): each voice's word timestamps (``stream_outputs(text, words=True)``, its
:class:`melstream.words.WordClock`) against the teacher's own (espeak-ng's word events for the same text, in
its audio's timeline: :meth:`melstream.espeak.Espeak.synthesize_words`; a number espeak reads as several
words is one word from its first to its last).  Each teacher word event goes to the voice word whose
characters it falls in; a voice word with none (a whole sentence, when the front end could not pair espeak's
words with the text's) is left out.  Columns of ``words.csv``: ``words`` (the voice's words), ``matched``
(those with a teacher time), ``mean_ms`` / ``p95_ms`` (absolute error of every
boundary, starts and ends), ``start_mean_ms``, ``end_mean_ms``.  Row ``teacher phonemes``: the teacher's
words timed by its own phoneme events (its per-token durations through the same clock) against its word
events: the floor of this measure (espeak's word events and phoneme events disagree by that much).  ``--words-only`` measures only this
(no recogniser, no LM: seconds).

Writes quality.csv (that table), words.csv, words.md, quality.md, quality_sentences.csv (every transcription), lm/ (the LM and
dictionary) and, for attention voices, alignment_<id>.png for 3 sentences (``<voice>_alignment_<id>.png``
when more than one attention voice is measured).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
import wave
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.lm import (  # noqa: E402
    DEFAULT_DECODER_OPTIONS,
    Recognizer,
    build_lm,
    edit_distance,
    normalize_words,
)

PEAK = 0.9
N_PLOTS = 3
COLUMNS = ("source", "n", "wer", "wer_mean", "mel_l1", "mel_l1_same_len", "n_same_len", "mel_l1_spectrum",
           "dur_err", "rtf", "vocoder_rtf", "monotonic", "guard_hits")

log = logging.getLogger("voice_quality")


# ------------------------------------------------------------------------------------------ data


def load_meta(split_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(split_dir / "meta.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float64 in [-1, 1] and the sample rate, from a 16-bit PCM WAV (channels averaged)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * f.getsampwidth()}-bit")
        rate, channels = f.getframerate(), f.getnchannels()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return pcm.reshape(-1, channels).mean(axis=1), rate


def peak_normalize(audio: np.ndarray, peak: float = PEAK) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * (peak / m) if m > 0 else x


# ------------------------------------------------------------------------------------------ metrics


def time_resample(mel: np.ndarray, n_frames: int) -> np.ndarray:
    """``mel`` ``[T, D]`` linearly interpolated along time to ``[n_frames, D]`` (end frames kept)."""
    mel = np.asarray(mel, dtype=np.float64)
    if len(mel) == n_frames:
        return mel
    if len(mel) == 0 or n_frames == 0:
        return np.zeros((n_frames, mel.shape[1] if mel.ndim == 2 else 0))
    if len(mel) == 1:
        return np.repeat(mel, n_frames, axis=0)
    pos = np.linspace(0.0, len(mel) - 1, n_frames) if n_frames > 1 else np.zeros(1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(mel) - 1)
    frac = (pos - lo)[:, None]
    return mel[lo] * (1 - frac) + mel[hi] * frac


def mel_l1(voice: np.ndarray, teacher: np.ndarray) -> float:
    """Mean absolute difference after resampling ``voice`` to the teacher's length (nan if either is empty)."""
    if len(voice) == 0 or len(teacher) == 0:
        return float("nan")
    return float(np.mean(np.abs(time_resample(voice, len(teacher)) - np.asarray(teacher, np.float64))))


def spectrum_l1(voice: np.ndarray, teacher: np.ndarray) -> float:
    """Alignment-free: mean |mean_t voice - mean_t teacher| over mel bins."""
    if len(voice) == 0 or len(teacher) == 0:
        return float("nan")
    return float(np.mean(np.abs(np.mean(voice, axis=0, dtype=np.float64) - np.mean(teacher, axis=0, dtype=np.float64))))


def is_monotonic(alignment: np.ndarray) -> bool:
    """True if the attended token (argmax over ``[T, N]`` rows) never moves backwards."""
    if len(alignment) < 2:
        return True
    return bool(np.all(np.diff(np.argmax(alignment, axis=1)) >= 0))


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if x == x]  # drop nan
    return float(np.mean(v)) if v else float("nan")


@dataclass
class SourceResult:
    """Per-source accumulators."""

    name: str
    refs: list[list[str]] = field(default_factory=list)
    hyps: list[list[str]] = field(default_factory=list)
    l1: list[float] = field(default_factory=list)
    l1_same: list[float] = field(default_factory=list)
    l1_spec: list[float] = field(default_factory=list)
    dur: list[float] = field(default_factory=list)
    synth_s: float = 0.0
    vocoder_s: float = 0.0
    audio_s: float = 0.0
    monotonic: list[bool] = field(default_factory=list)
    guard_hits: int | None = None
    timed: bool = False
    vocoded: bool = False

    def add_transcript(self, ref: list[str], hyp: list[str]) -> float:
        self.refs.append(ref)
        self.hyps.append(hyp)
        return edit_distance(ref, hyp) / len(ref) if ref else float(bool(hyp))

    def row(self) -> dict[str, Any]:
        edits = sum(edit_distance(r, h) for r, h in zip(self.refs, self.hyps, strict=True))
        words = sum(len(r) for r in self.refs)
        per = [edit_distance(r, h) / len(r) for r, h in zip(self.refs, self.hyps, strict=True) if r]
        return {
            "source": self.name,
            "n": len(self.refs),
            "wer": edits / words if words else float("nan"),
            "wer_mean": _mean(per),
            "mel_l1": _mean(self.l1) if self.l1 else None,
            "mel_l1_same_len": _mean(self.l1_same) if self.l1_same else None,
            "n_same_len": len(self.l1_same) if self.l1 else None,
            "mel_l1_spectrum": _mean(self.l1_spec) if self.l1_spec else None,
            "dur_err": _mean(self.dur) if self.dur else None,
            "rtf": self.synth_s / self.audio_s if self.timed and self.audio_s else None,
            "vocoder_rtf": self.vocoder_s / self.audio_s if self.vocoded and self.audio_s else None,
            "monotonic": sum(self.monotonic) / len(self.monotonic) if self.monotonic else None,
            "guard_hits": self.guard_hits,
        }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table (also readable on a terminal)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ word boundaries

WORD_COLUMNS = ("source", "sentences", "words", "matched", "mean_ms", "p95_ms", "start_mean_ms", "end_mean_ms")


def locate(text: str, names: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each of ``names`` (words of ``text``, in order) is in ``text``: ``(first, end)`` characters, or None."""
    out: list[tuple[int, int] | None] = []
    at = 0
    for name in names:
        found = text.find(name, at)
        out.append(None if found < 0 else (found, found + len(name)))
        at = at if found < 0 else found + len(name)
    return out


def teacher_words(text: str, names: Sequence[str], voice: str = "en-us") -> list[tuple[str, float, float] | None]:
    """The teacher's times (seconds) for the words ``names`` of ``text``: espeak-ng's word events that fall in each
    word's characters, from the first one's start to the last one's end (espeak reads a number as several words,
    and names them by pieces of it); ``None`` for a word with no event of its own."""
    from melstream.espeak import get_espeak

    espeak = get_espeak(voice)
    _, events = espeak.synthesize_words(text)
    places = locate(text, names)
    times: list[list[float] | None] = [None] * len(names)
    at = 0
    for name, start, end in events:
        position = text.find(name, at) if name else -1
        if position < 0:
            continue
        at = position
        owner = next((k for k, span in enumerate(places) if span is not None and span[0] <= position < span[1]), None)
        if owner is None:
            continue
        slot = times[owner]
        if slot is None:
            times[owner] = [start / espeak.sample_rate, end / espeak.sample_rate]
        else:
            slot[1] = end / espeak.sample_rate
    return [None if t is None else (name, t[0], t[1]) for name, t in zip(names, times, strict=True)]


@dataclass
class WordResult:
    name: str
    sentences: int = 0
    words: int = 0
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    def add(self, voice: Sequence[tuple[str, float, float]], teacher: Sequence[tuple[str, float, float] | None]) -> None:
        self.sentences += 1
        self.words += len(voice)
        for v, t in zip(voice, teacher, strict=True):
            if t is not None:
                self.starts.append(abs(v[1] - t[1]) * 1000)
                self.ends.append(abs(v[2] - t[2]) * 1000)

    def row(self) -> dict[str, Any]:
        both = self.starts + self.ends
        return {"source": self.name, "sentences": self.sentences, "words": self.words, "matched": len(self.starts),
                "mean_ms": _mean(both), "p95_ms": float(np.percentile(both, 95)) if both else float("nan"),
                "start_mean_ms": _mean(self.starts), "end_mean_ms": _mean(self.ends)}


def word_boundaries(pipelines: Mapping[str, Any], test: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each voice's word boundary errors against the teacher's word events, over ``test``."""
    results = {v: WordResult(f"{v}") for v in pipelines}
    floor = WordResult("teacher phonemes")
    for utt in test:
        for v, pipeline in pipelines.items():
            voice = [w for chunk in pipeline.stream_outputs(utt["text"], words=True) for w in chunk["words"]]
            results[v].add(voice, teacher_words(utt["text"], [w[0] for w in voice]))
        if pipelines:
            aligned = teacher_phoneme_words(next(iter(pipelines.values())), utt["text"])
            if aligned is not None:
                floor.add(aligned, teacher_words(utt["text"], [w[0] for w in aligned]))
    return ([floor.row()] if floor.sentences else []) + [r.row() for r in results.values()]


def teacher_phoneme_words(pipeline: Any, text: str) -> list[tuple[str, float, float]] | None:
    """The teacher's words timed by its phoneme events instead (its per-token durations, as the voices learnt
    them, through the same WordClock): how far the word events alone are from the teacher's own phonemes, the
    floor of this measure.  ``None`` where the teacher's tokens are not the front end's (or its events do not
    match its phonemes)."""
    from melstream.blocks import TokenStream
    from melstream.espeak import get_espeak
    from melstream.words import timed_words

    frontend = pipeline.frontend
    if not hasattr(frontend, "voice"):
        return None
    try:
        _, tokens, durations = get_espeak(frontend.voice).align(text)
    except ValueError:
        return None
    stream = TokenStream(frontend.sentences(text), frontend.end_id)
    ids = stream.all()
    if len(tokens) + 1 != len(ids):  # a token the voice does not know was dropped: positions differ
        return None
    frames = np.repeat(np.arange(len(tokens)), durations)
    return [w for chunk in timed_words(pipeline.frame_s, stream.words(), [frames]) for w in chunk]


def write_words(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(out / "words.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(WORD_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in WORD_COLUMNS})
    (out / "words.md").write_text("# Word boundaries against the teacher's word events\n\n" + table(rows, WORD_COLUMNS) + "\n",
                                  encoding="utf-8")


# ------------------------------------------------------------------------------------------ attention


def attention_decoder(pipeline: Any) -> Any | None:
    """The pipeline's AttentionDecoder, if it has one (the root's streamable block, else anywhere)."""
    from melstream.blocks import walk
    from melstream.components.attention import AttentionDecoder

    if isinstance(getattr(pipeline, "streamable_block", None), AttentionDecoder):
        return pipeline.streamable_block
    return next((b for b in walk(pipeline) if isinstance(b, AttentionDecoder)), None)


def alignment_for(pipeline: Any, decoder: Any, text: str) -> np.ndarray:
    """``[T, N]`` attention weights for ``text``: the decoder's chunks' ``alignment`` over the context
    the pipeline gives it (``inputs_for(text)`` plus the root sequence block's outputs)."""
    env = dict(pipeline.inputs_for(text))
    if decoder is pipeline.streamable_block:
        env.update(pipeline.sequence_block(env))
    chunks = [c["alignment"] for c in decoder.generate(env) if len(c["alignment"])]
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)


def plot_alignment(alignment: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if alignment.size:
        im = ax.imshow(alignment.T, aspect="auto", origin="lower", interpolation="none", cmap="viridis")
        fig.colorbar(im, ax=ax)
    ax.set_xlabel("decoder frame")
    ax.set_ylabel("encoder token")
    ax.set_title(title if len(title) < 90 else title[:87] + "...", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ run


def run_words(teacher: Path, addons: Path, voices: Sequence[str], limit: int | None, out: Path) -> list[dict[str, Any]]:
    """Only the word boundary section (no recogniser)."""
    import melstream

    out.mkdir(parents=True, exist_ok=True)
    test = load_meta(teacher / "test", limit)
    pipelines = {v: melstream.load_addon(addons / v).build() for v in voices}
    rows = word_boundaries(pipelines, test)
    write_words(out, rows)
    return rows


def run(teacher: Path, addons: Path, voices: Sequence[str], limit: int | None, out: Path,
        decoder_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import melstream
    from melstream.components.vocoder import default_vocoder

    out.mkdir(parents=True, exist_ok=True)
    train_texts = [m["text"] for m in load_meta(teacher / "train")]
    lm_path, dict_path = build_lm(train_texts, out / "lm")
    lm_stats = json.loads((out / "lm" / "lm_stats.json").read_text())
    options = {**DEFAULT_DECODER_OPTIONS, **(decoder_options or {})}
    recognizer = Recognizer(lm_path, dict_path, **options)
    vocab = {line.split()[0].split("(")[0] for line in dict_path.read_text().splitlines() if line.strip()}

    test = load_meta(teacher / "test", limit)
    mels = np.load(teacher / "test" / "mels.npy", mmap_mode="r")
    vocoder_addon = melstream.load_addon(addons / "fastvoice")
    vocoder = default_vocoder(vocoder_addon)
    spec = vocoder_addon.audio
    frame_s = spec.hop_length / spec.sample_rate

    pipelines = {v: melstream.load_addon(addons / v).build() for v in voices}
    decoders = {v: attention_decoder(p) for v, p in pipelines.items()}
    attention_voices = [v for v, d in decoders.items() if d is not None]
    for p in pipelines.values():  # warm-up: sessions load, first-call costs stay out of the timing
        p.synthesize(test[0]["text"] if test else "Warm up.")
    guard_start = {v: d.guard_hits for v, d in decoders.items() if d is not None}

    results = {name: SourceResult(name) for name in ["teacher-audio", "teacher-mel+GL", *(f"{v}+GL" for v in voices)]}
    results["teacher-mel+GL"].vocoded = True
    for v in voices:
        results[f"{v}+GL"].timed = results[f"{v}+GL"].vocoded = True
        if decoders[v] is not None:
            results[f"{v}+GL"].guard_hits = 0
    sentences: list[dict[str, Any]] = []
    ref_words = oov = 0

    def recognise(source: str, utt: dict[str, Any], audio: np.ndarray, rate: int) -> None:
        hyp = recognizer.transcribe(peak_normalize(audio), rate)
        ref = normalize_words(utt["text"])
        wer = results[source].add_transcript(ref, normalize_words(hyp))
        sentences.append({"id": utt["id"], "source": source, "wer": round(wer, 4), "reference": " ".join(ref), "hypothesis": hyp})

    t_start = time.perf_counter()
    for i, utt in enumerate(test):
        ref = normalize_words(utt["text"])
        ref_words += len(ref)
        oov += sum(w not in vocab for w in ref)
        teacher_mel = np.asarray(mels[utt["offset"]:utt["offset"] + utt["n_frames"]], dtype=np.float32)
        wav = teacher / "test" / "wavs" / f"{utt['id']}.wav"
        if wav.exists():
            audio, rate = read_wav(wav)
            recognise("teacher-audio", utt, audio, rate)
        t0 = time.perf_counter()
        audio = vocoder.vocode(teacher_mel)
        results["teacher-mel+GL"].vocoder_s += time.perf_counter() - t0
        results["teacher-mel+GL"].audio_s += len(teacher_mel) * frame_s
        recognise("teacher-mel+GL", utt, audio, spec.sample_rate)
        for v, pipeline in pipelines.items():
            res = results[f"{v}+GL"]
            t0 = time.perf_counter()
            mel = pipeline.synthesize(utt["text"])
            res.synth_s += time.perf_counter() - t0
            res.audio_s += len(mel) * frame_s
            res.l1.append(mel_l1(mel, teacher_mel))
            if len(mel) == len(teacher_mel):
                res.l1_same.append(res.l1[-1])
            res.l1_spec.append(spectrum_l1(mel, teacher_mel))
            res.dur.append(abs(len(mel) - len(teacher_mel)) / max(len(teacher_mel), 1))
            t0 = time.perf_counter()
            audio = vocoder.vocode(mel) if len(mel) else np.zeros(0, np.float32)
            res.vocoder_s += time.perf_counter() - t0
            recognise(f"{v}+GL", utt, audio, spec.sample_rate)
            decoder = decoders[v]
            if decoder is not None:
                res.guard_hits = decoder.guard_hits - guard_start[v]
                before = decoder.guard_hits
                alignment = alignment_for(pipeline, decoder, utt["text"])
                guard_start[v] += decoder.guard_hits - before  # the alignment pass does not count twice
                res.monotonic.append(is_monotonic(alignment))
                if i < N_PLOTS:
                    name = f"alignment_{utt['id']}.png" if len(attention_voices) == 1 else f"{v}_alignment_{utt['id']}.png"
                    plot_alignment(alignment, out / name, f"{v} {utt['id']}: {utt['text']}")
        if (i + 1) % 10 == 0 or i + 1 == len(test):
            log.info("%d/%d sentences, %.0f s", i + 1, len(test), time.perf_counter() - t_start)

    rows = [r.row() for r in results.values() if r.refs]
    word_rows = word_boundaries(pipelines, test)
    write_words(out, word_rows)
    summary = {"rows": rows, "word_rows": word_rows, "lm": lm_stats, "decoder": options, "test_sentences": len(test), "test_words": ref_words,
               "test_oov_rate": oov / ref_words if ref_words else float("nan"), "sentences": sentences}
    write_reports(out, summary)
    return summary


def write_reports(out: Path, summary: Mapping[str, Any]) -> None:
    rows = summary["rows"]
    with open(out / "quality.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})
    with open(out / "quality_sentences.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "source", "wer", "reference", "hypothesis"])
        w.writeheader()
        w.writerows(summary["sentences"])
    lm = summary["lm"]
    md = [
        "# Voice quality", "",
        f"{summary['test_sentences']} held-out test sentences ({summary['test_words']} words; "
        f"{100 * summary['test_oov_rate']:.1f}% of them outside the LM vocabulary).", "",
        table(rows), "",
        "Word boundaries against the teacher's word events (ms; see words.md):", "",
        table(summary.get("word_rows", []), WORD_COLUMNS), "",
        f"LM: Witten-Bell trigram from {lm['sentences']} training sentences, vocabulary {lm['vocabulary']}, "
        f"n-grams {lm['ngrams']}; {lm['dropped_tokens']} word tokens ({lm['dropped_types']} types) dropped as missing "
        f"from the pocketsphinx dictionary (e.g. {', '.join(lm['dropped_examples'][:8]) or 'none'}).", "",
        "Decoder: pocketsphinx en-us, " + ", ".join(f"{k}={v}" for k, v in summary["decoder"].items()) + ".", "",
        "Columns: see benchmarks/voice_quality.py.  Audio peak-normalised to 0.9 before recognition; "
        "every vocoder is Griffin-Lim (default_vocoder).", "",
        "## Examples", "",
    ]
    shown: dict[str, int] = {}
    for s in summary["sentences"]:
        if shown.get(s["source"], 0) < 3:
            shown[s["source"]] = shown.get(s["source"], 0) + 1
            md.append(f"- `{s['source']}` {s['id']} (WER {s['wer']:.2f}): ref “{s['reference']}” → hyp “{s['hypothesis']}”")
    (out / "quality.md").write_text("\n".join(md) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=Path("data/teacher"))
    ap.add_argument("--addons", type=Path, default=Path("addons"))
    ap.add_argument("--voices", nargs="*", default=["fastvoice", "tacovoice"])
    ap.add_argument("--limit", type=int, default=100, help="test sentences (0: all)")
    ap.add_argument("--out", type=Path, default=Path("out/quality"))
    ap.add_argument("--lw", type=float, default=None, help="LM weight for all three decoder passes (default: pocketsphinx's)")
    ap.add_argument("--beam", type=float, default=None, help="decoder beam (default: training.lm.DEFAULT_DECODER_OPTIONS)")
    ap.add_argument("--wip", type=float, default=None, help="word insertion penalty")
    ap.add_argument("--words-only", action="store_true", help="only the word boundary section (no recogniser)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.words_only:
        word_rows = run_words(args.teacher, args.addons, args.voices, args.limit or None, args.out)
        print(table(word_rows, WORD_COLUMNS))
        print(f"wrote {args.out}/words.csv, words.md")
        return
    options: dict[str, Any] = {k: v for k, v in (("beam", args.beam), ("wip", args.wip)) if v is not None}
    if args.lw is not None:
        options.update(lw=args.lw, fwdflatlw=args.lw, bestpathlw=args.lw)
    summary = run(args.teacher, args.addons, args.voices, args.limit or None, args.out, options)
    print(table(summary["rows"]))
    print("\nWord boundaries against the teacher's word events (ms):\n" + table(summary["word_rows"], WORD_COLUMNS))
    lm = summary["lm"]
    print(f"\nLM: {lm['sentences']} train sentences, vocabulary {lm['vocabulary']}, {lm['dropped_tokens']} word tokens dropped "
          f"(not in the dictionary); test OOV rate {100 * summary['test_oov_rate']:.1f}%")
    print(f"wrote {args.out}/quality.csv, quality.md, quality_sentences.csv, words.csv, words.md")


if __name__ == "__main__":
    main()
