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

EVALUATION = "## Evaluation (held-out sentences, benchmarks/voice_quality.py)"
LICENCES_HEADING = "## Licences"

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
    lines += fixed_shapes_section(addon)
    if quality is not None and (quality / "quality.md").is_file():
        lines += [EVALUATION, "", (quality / "quality.md").read_text().strip(), ""]
    elif (addon_dir / "MODEL_CARD.md").is_file():
        # no new evaluation run: the card keeps its last one (a re-export that changes no output keeps it valid)
        old = (addon_dir / "MODEL_CARD.md").read_text()
        if EVALUATION in old and LICENCES_HEADING in old:
            lines += [old[old.index(EVALUATION):old.index(LICENCES_HEADING)].strip(), ""]
    lines += [LICENCES_HEADING, "", LICENCES]
    return "\n".join(lines)


def masking_rule(arch_type: str) -> str:
    """The "Masking rule:" paragraph of a registered architecture's docstring (melstream/nets.py: one source)."""
    import re

    from melstream.nets import NETS

    # the docstring's reStructuredText literals and roles, as Markdown code
    doc = re.sub(r":\w+:`([^`]+)`", r"`\1`", (NETS[arch_type].__doc__ or "").replace("``", "`"))
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if text.startswith("Masking rule:"):
            return text.removeprefix("Masking rule:").strip()
        if "Masking rule:" in text:
            return text[text.index("Masking rule:") + len("Masking rule:"):].strip()
    return "none stated"


def fixed_shapes_section(addon: dict) -> list[str]:  # type: ignore[type-arg]
    """How each network runs at fixed shapes (the cpu-static and GPU TensorRT profiles): its length input,
    buckets and context, and what its mask guarantees."""
    lines = ["## Fixed shapes", "",
             "Every network takes a length input (`length_input`, int64 [1]: the true size of its variable axis) and "
             "masks what lies past it, so a call padded to one of its buckets gives exactly the values of the unpadded "
             "call; melstream's integration layer pads, splits and crops (melstream/runners/fixed.py). The networks were "
             "re-exported with it from the trained parameters (training/reexport.py), without retraining; unpadded, "
             "they give bit-identical output to the previous version.", ""]
    for name, net in addon["networks"].items():
        context = next((f"{net[k]} {k.removeprefix('context_')} of context on each side" for k in ("context_tokens", "context_frames")
                        if k in net), "no declared context, so the integration layer never splits it (a block that needs more, as the "
                       "AttentionDecoder does for a long memory, runs it on a window of the largest bucket)")
        buckets = ", ".join(map(str, net.get("buckets", []))) or "none"
        lines.append(f"- `{name}` ({net['arch']['type']}): buckets {buckets}; {context}. "
                     f"Masking rule: {masking_rule(net['arch']['type'])}")
    return [*lines, ""]


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
