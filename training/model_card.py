"""Write each trained addon's MODEL_CARD.md from its training.json and the quality benchmark.

    python -m training.model_card [--addons addons] [--quality out/quality]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARCH = {
    "fastvoice": "duration-based: phoneme encoder (4 residual conv layers, 192 channels) and duration predictor "
                 "(3 layers, 128 channels) -> Upsampler -> convolutional mel decoder (6 layers, 256 channels, "
                 "receptive field +-12 frames); run as SegmentedPipeline(Encoders, Upsampler) -> Decoder",
    "tacovoice": "legacy attention: phoneme encoder (4 residual conv layers, 192 channels) -> autoregressive "
                 "decoder (prenet 128, GRU 256) with forward (monotonic) attention and a stop token, one frame "
                 "per step. Trained teacher-forced (frames and attention: each step starts from the phoneme "
                 "espeak-ng spoke, the decision to move on is supervised); at synthesis it attends freely, "
                 "reading the most likely phoneme of its own alignment",
}

LICENCES = """\
- **espeak-ng** (the teacher: its audio and phoneme timings are the training targets; it is also the
  serving front end, loaded at run time as a library) is GPL-3.0-or-later. Whether weights learned from a
  program's output are a derived work of that program is unsettled; we treat the weights conservatively as
  derived from espeak-ng's voice data and distribute them under GPL-3.0-or-later. melstream's own code is
  MIT. A product that ships these weights or links libespeak-ng must meet the GPL's terms.
- **Training texts**: docstrings and pydoc topics of the CPython standard library (Python Software
  Foundation License 2.0, permissive; attribution kept here) and the licence texts in
  /usr/share/common-licenses of Debian (verbatim copying of licence texts is permitted; they are used as
  sentences, not redistributed — no corpus or audio is committed to this repository).
- **pocketsphinx** (evaluation only, BSD-2-Clause) and its en-us acoustic model and dictionary (BSD-style)
  are not part of the voice.
"""


def card(addon_dir: Path, quality: Path | None) -> str:
    addon = json.loads((addon_dir / "addon.json").read_text())
    meta = json.loads((addon_dir / "training.json").read_text())
    name = addon["name"]
    symbols = addon["text"]["symbols"]
    size_mb = sum(p.stat().st_size for p in addon_dir.glob("*.onnx")) / 1e6
    lines = [
        f"# {name} {addon['version']} — model card", "",
        addon["description"].replace(" See MODEL_CARD.md.", ""), "",
        "## Architecture", "", ARCH.get(name, "see addon.json"), "",
        f"- parameters: {meta['parameters'] / 1e6:.2f} M; ONNX files: {size_mb:.1f} MB",
        f"- audio: {addon['audio']['sample_rate']} Hz, hop {addon['audio']['hop_length']}, "
        f"{addon['audio']['n_mels']}-bin natural-log mel (melstream/audio.py, the same definition for training and serving)",
        f"- front end: `espeak-phonemes` — espeak-ng (en-us) phonemes, the same phonemes the teacher spoke; "
        f"{len(symbols)} symbols: `{' '.join(symbols)}`", "",
        "## Data", "",
        f"- {meta['train_utterances']} training sentences ({meta['train_hours']} h of teacher speech) from the Python "
        "standard library's docstrings and pydoc topics and Debian's licence texts; 100 validation and 100 held-out "
        "test sentences that training never sees (training/corpus.py, seeded split)",
        "- teacher: espeak-ng 1.51 (en-us) audio at 22050 Hz and per-phoneme durations from its synthesis events "
        "(training/teacher.py)", "",
        "## Training", "",
        f"- {meta['steps']} steps in {meta['seconds'] / 60:.1f} min on {meta['threads']} CPU thread(s), seed {meta['seed']} "
        f"(`make voices` reproduces it)",
        f"- final validation: {', '.join(f'{k} {v:.4g}' for k, v in meta['validation'].items())}", "",
    ]
    if meta.get("notes"):
        lines += [f"Note: {meta['notes']}", ""]
    if meta.get("log"):
        keys = [k for k in meta["log"][0] if k not in ("step", "seconds")]
        lines += ["| step | minutes | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        lines += [f"| {r['step']} | {r['seconds'] / 60:.1f} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |" for r in meta["log"]]
        lines.append("")
    if quality is not None and (quality / "quality.md").is_file():
        lines += ["## Evaluation (held-out sentences, benchmarks/voice_quality.py)", "", (quality / "quality.md").read_text().strip(), ""]
    lines += ["## Licences", "", LICENCES]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addons", type=Path, default=Path("addons"))
    ap.add_argument("--quality", type=Path, default=Path("out/quality"))
    args = ap.parse_args()
    for d in sorted(args.addons.iterdir()):
        if (d / "training.json").is_file():
            (d / "MODEL_CARD.md").write_text(card(d, args.quality))
            print(f"wrote {d / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
