"""Speech-recognition tools for measuring trained voices: a trigram language model, a pronunciation
dictionary, word error rate, and a pocketsphinx recogniser.

* :func:`normalize_words` - the one text normalisation used for the LM text and for WER scoring.
* :func:`build_lm` - an interpolated Witten-Bell trigram in ARPA format (written in backoff form: each
  listed n-gram carries its full interpolated probability, each lower-order context its backoff weight
  ``gamma(h)``, which makes the backoff model exactly equal to the interpolated one and normalised) and a
  dictionary restricted to the LM vocabulary, from the pocketsphinx en-us dictionary.
* :func:`word_error_rate` - word-level Levenshtein distance / reference length.
* :func:`resample` - windowed-sinc resampling in numpy (no scipy).
* :class:`Recognizer` - pocketsphinx decoding of float audio at any sample rate.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("training.lm")

BOS = "<s>"
EOS = "</s>"
ASR_RATE = 16000

#: Decoder settings (pocketsphinx defaults otherwise), tuned on 30 held-out sentences of the espeak-ng
#: teacher with the in-domain trigram: 8 Gaussians per frame instead of 4, a 20x higher silence probability
#: and wider beams took teacher-audio WER 0.792 -> 0.767 and teacher-mel+Griffin-Lim 0.616 -> 0.586
#: (topn is what helps; silprob alone is slightly worse); LM weights 3/10/15 (all three passes) and word
#: insertion penalties 1e-3/0.2/5 were worse than the defaults (lw 6.5/8.5/9.5, wip 0.65).
DEFAULT_DECODER_OPTIONS: dict[str, Any] = {"beam": 1e-60, "wbeam": 1e-40, "pbeam": 1e-60, "topn": 8, "silprob": 0.1}

# ------------------------------------------------------------------------------------------ text

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'"})
_NON_WORD = re.compile(r"[^a-z0-9']+")
_EDGE_APOSTROPHES = re.compile(r"(?<![a-z0-9])'+|'+(?![a-z0-9])")


def _expand(text: str) -> str:
    """Numbers, money, symbols and Unicode spelled out as the voices' front end reads them, if it can."""
    try:
        from melstream.text import CharFrontend

        return CharFrontend().normalize(text)
    except Exception:  # nothing to speak, too long, or the front end is unavailable: plain rules only
        return text


def normalize_words(text: str) -> list[str]:
    """Words of ``text`` for LM training and WER scoring: lowercase; numbers and symbols spelled out
    (via the char front end's normaliser when it accepts the text); accents removed; every punctuation
    mark (hyphens and dashes included) becomes a space, except apostrophes inside a word
    (``don't`` stays, ``'tis`` -> ``tis``, ``dogs'`` -> ``dogs``); whitespace collapses."""
    if not text or not text.strip():
        return []
    text = unicodedata.normalize("NFKD", _expand(text).translate(_APOSTROPHES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _NON_WORD.sub(" ", text)
    text = _EDGE_APOSTROPHES.sub(" ", text)
    return text.split()


# ------------------------------------------------------------------------------------------ WER


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitution, insertion, deletion cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize_words`:
    edit distance / number of reference words.  An empty reference gives 0.0 for an empty hypothesis
    and 1.0 otherwise (every word is an insertion; the rate is capped there to stay finite)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


# ------------------------------------------------------------------------------------------ dictionary


def default_model_dir() -> Path:
    """The en-us model directory shipped in the pocketsphinx wheel."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


def load_pronunciations(dict_path: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """``word -> [pronunciation, ...]`` from a CMU-style dictionary (``word(2)`` variants folded in)."""
    path = Path(dict_path) if dict_path is not None else default_model_dir() / "cmudict-en-us.dict"
    prons: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or parts[0].startswith(";;"):
                continue
            word = re.sub(r"\(\d+\)$", "", parts[0])
            phones = [p for p in parts[1:] if not p.startswith("#")]  # some entries carry '#' comments
            if phones:
                prons[word].append(" ".join(phones))
    return dict(prons)


# ------------------------------------------------------------------------------------------ language model


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else -99.0


class WittenBellTrigram:
    """Interpolated Witten-Bell n-gram model (order 3 by default) over sentences of words.

    ``P(w | h) = (c(h w) + T(h) P(w | h')) / (c(h) + T(h))``, with ``T(h)`` the number of distinct
    words seen after ``h`` and ``h'`` the history without its oldest word; the unigram level
    interpolates with the uniform distribution over the vocabulary (``</s>`` included, ``<s>`` never
    predicted).  An unseen history has ``P(w | h) = P(w | h')``.
    """

    def __init__(self, sentences: Iterable[Sequence[str]], order: int = 3) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        self.counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]  # index = n
        for words in sentences:
            if not words:
                continue
            padded = [BOS, *words, EOS]
            for n in range(1, order + 1):
                for i in range(len(padded) - n + 1):
                    gram = tuple(padded[i:i + n])
                    if gram[-1] == BOS:  # <s> is only ever a history
                        continue
                    self.counts[n][gram] += 1
        self.vocab = sorted({g[0] for g in self.counts[1]})
        if not self.vocab or self.vocab == [EOS]:
            raise ValueError("no words to build a language model from")
        # per history: total count and number of distinct followers
        self.history_total: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
        self.history_types: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
        for n in range(1, order + 1):
            for gram, c in self.counts[n].items():
                self.history_total[n][gram[:-1]] += c
                self.history_types[n][gram[:-1]] += 1
        self._cache: dict[tuple[str, ...], float] = {}

    def gamma(self, history: tuple[str, ...]) -> float:
        """The interpolation (= backoff) weight of ``history``: ``T / (c + T)``, 1 if unseen."""
        n = len(history) + 1
        total, types = self.history_total[n][history], self.history_types[n][history]
        return 1.0 if total == 0 else types / (total + types)

    def prob(self, word: str, history: tuple[str, ...] = ()) -> float:
        """``P(word | history)`` (history truncated to ``order - 1`` words)."""
        history = history[len(history) - (self.order - 1):] if self.order > 1 else ()
        key = (*history, word)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if history:
            lower = self.prob(word, history[1:])
        else:
            lower = 1.0 / len(self.vocab)
        n = len(history) + 1
        total, types = self.history_total[n][history], self.history_types[n][history]
        if total == 0:
            p = lower
        else:
            p = (self.counts[n][key] + types * lower) / (total + types)
        self._cache[key] = p
        return p

    def arpa(self) -> str:
        """The model as ARPA text: every seen n-gram with ``log10 P`` and, below the top order,
        ``log10 gamma`` as its backoff weight; ``<s>`` as a unigram with probability ``-99``."""
        sections: list[list[str]] = []
        for n in range(1, self.order + 1):
            grams = sorted(self.counts[n]) if n > 1 else [(w,) for w in self.vocab]
            lines = []
            if n == 1:
                lines.append(f"-99.0000000\t{BOS}" + (f"\t{_log10(self.gamma((BOS,))):.7f}" if self.order > 1 else ""))
            for gram in grams:
                line = f"{_log10(self.prob(gram[-1], gram[:-1])):.7f}\t{' '.join(gram)}"
                if n < self.order:
                    line += f"\t{_log10(self.gamma(gram)):.7f}"
                lines.append(line)
            sections.append(lines)
        out = ["", "\\data\\"]
        out += [f"ngram {n}={len(lines)}" for n, lines in enumerate(sections, 1)]
        for n, lines in enumerate(sections, 1):
            out += ["", f"\\{n}-grams:", *lines]
        out += ["", "\\end\\", ""]
        return "\n".join(out)


def build_lm(sentences: Iterable[str], out_dir: str | os.PathLike[str], *, order: int = 3,
             source_dict: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/lm.arpa`` (Witten-Bell trigram over the normalised ``sentences``) and
    ``out_dir/lm.dict`` (the pocketsphinx en-us pronunciations of exactly the LM vocabulary).

    Give it TRAINING sentences only.  Words the pronunciation dictionary lacks are dropped from the LM
    text (the sentence keeps its other words); how many is logged and written, with the other counts,
    to ``out_dir/lm_stats.json``.  Returns ``(lm_path, dict_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prons = load_pronunciations(source_dict)
    texts: list[list[str]] = []
    dropped: Counter[str] = Counter()
    n_words = 0
    for sentence in sentences:
        words = normalize_words(sentence)
        n_words += len(words)
        kept = [w for w in words if w in prons]
        dropped.update(w for w in words if w not in prons)
        if kept:
            texts.append(kept)
    model = WittenBellTrigram(texts, order=order)
    lm_path, dict_path = out / "lm.arpa", out / "lm.dict"
    lm_path.write_text(model.arpa(), encoding="utf-8")
    with open(dict_path, "w", encoding="utf-8") as f:
        for word in model.vocab:
            if word == EOS:
                continue
            for i, pron in enumerate(prons[word]):
                f.write(f"{word if i == 0 else f'{word}({i + 1})'} {pron}\n")
    stats = {
        "sentences": len(texts), "words": n_words, "vocabulary": len(model.vocab) - 1,
        "dropped_tokens": sum(dropped.values()), "dropped_types": len(dropped),
        "dropped_examples": [w for w, _ in dropped.most_common(20)],
        "ngrams": {str(n): (len(model.counts[n]) + (1 if n == 1 else 0)) for n in range(1, order + 1)},
    }
    (out / "lm_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    log.info("LM: %d sentences, %d words, vocabulary %d; dropped %d word tokens (%d types) missing from the dictionary",
             stats["sentences"], n_words, stats["vocabulary"], stats["dropped_tokens"], stats["dropped_types"])
    return lm_path, dict_path


# ------------------------------------------------------------------------------------------ audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int, *, zero_crossings: int = 16, block: int = 16384) -> np.ndarray:
    """Band-limited resampling of mono ``audio`` by a Hann-windowed sinc (cut-off at 0.95 of the lower
    Nyquist frequency, ``zero_crossings`` lobes each side).  Output has ``ceil(len * rate_out / rate_in)``
    samples, sample ``k`` at time ``k / rate_out``.  float64 out."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in}, {rate_out}")
    if rate_in == rate_out or len(x) == 0:
        return x.copy()
    n_out = -(-len(x) * rate_out // rate_in)
    cutoff = 0.95 * min(rate_in, rate_out) / 2  # Hz
    scale = cutoff / rate_in * 2  # cut-off as a fraction of the input Nyquist: sinc argument per input sample
    half = int(math.ceil(zero_crossings / scale))  # taps each side, in input samples
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out)
    offsets = np.arange(-half, half + 1)
    for start in range(0, n_out, block):
        k = np.arange(start, min(start + block, n_out))
        t = k * (rate_in / rate_out)  # position in input samples
        base = np.floor(t).astype(np.int64)
        idx = base[:, None] + offsets[None, :]  # input sample indices
        dist = t[:, None] - idx  # in input samples
        window = 0.5 + 0.5 * np.cos(np.pi * np.clip(dist / (half + 1), -1.0, 1.0))
        kernel = scale * np.sinc(scale * dist) * window
        out[start:start + len(k)] = np.sum(padded[idx + half] * kernel, axis=1)
    return out


def to_int16(audio: np.ndarray, *, peak: float | None = None) -> np.ndarray:
    """float audio in [-1, 1] (optionally first scaled to ``peak`` absolute maximum) -> int16."""
    x = np.asarray(audio, dtype=np.float64)
    if peak is not None:
        m = float(np.max(np.abs(x))) if len(x) else 0.0
        if m > 0:
            x = x * (peak / m)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------ recogniser


class Recognizer:
    """pocketsphinx (en-us acoustic model from the wheel) with the given ARPA LM and dictionary.

    ``options`` override decoder settings (``lw``, ``beam``, ``wip``, ...); the defaults are
    :data:`DEFAULT_DECODER_OPTIONS`.  Each :meth:`transcribe` decodes with a fresh decoder (about 0.1 s
    to load a few-thousand-word LM), so a transcription never depends on what was decoded before.
    """

    def __init__(self, lm_path: str | os.PathLike[str], dict_path: str | os.PathLike[str], **options: Any) -> None:
        from pocketsphinx import Config, Decoder

        settings = {**DEFAULT_DECODER_OPTIONS, **options}
        config = Config(hmm=str(default_model_dir() / "en-us"), lm=str(lm_path), dict=str(dict_path),
                        samprate=ASR_RATE, loglevel=settings.pop("loglevel", "ERROR"))
        for key, value in settings.items():
            config[key] = value
        self.options = settings
        self._config = config
        self._decoder_class = Decoder
        self.decoder = Decoder(config)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The best hypothesis for float (or int16) mono ``audio`` at ``sample_rate``: words separated by
        single spaces, fillers and pronunciation-variant markers removed ("" if nothing was heard)."""
        x = np.asarray(audio)
        if x.dtype == np.int16:
            x = x.astype(np.float64) / 32768.0
        x = resample(x, int(sample_rate), ASR_RATE)
        pcm = to_int16(x)
        if len(pcm) == 0:
            return ""
        # pocketsphinx carries state from one utterance to the next (the same audio decodes differently
        # after other audio), so every utterance gets a fresh decoder: results do not depend on order.
        self.decoder = self._decoder_class(self._config)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        if hyp is None:
            return ""
        words = [re.sub(r"\(\d+\)$", "", w) for w in hyp.hypstr.split()]
        return " ".join(w for w in words if not (w.startswith("<") or w.startswith("[") or w.startswith("++")))
