"""Write the two example addons with seeded, deterministic weights (placeholders until trained voices).

    python scripts/make_addons.py [--out addons]

Networks are exported to ONNX (graph + parameters; no pickle).  Shapes are real: 80 mel bins,
22050 Hz, hop 256.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from melstream.nets import build_net
from melstream.text import CharFrontend

AUDIO = {"sample_rate": 22050, "hop_length": 256, "win_length": 1024, "n_fft": 1024, "n_mels": 80,
         "fmin": 0.0, "fmax": 8000.0}
TEXT = {"frontend": "english-chars", "max_chars": 10000}


def export(arch: dict[str, Any], examples: dict[str, torch.Tensor], outputs: dict[str, list[int]], dynamic: dict[str, dict[int, str]],
           path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    module = build_net(arch).eval()
    torch.onnx.export(module, tuple(examples.values()), str(path), input_names=list(examples), output_names=list(outputs),
                      dynamic_axes=dynamic, opset_version=17, do_constant_folding=False, dynamo=False)


def tensor(dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape}


def duration_addon(out: Path) -> None:
    n_sym = CharFrontend().num_symbols
    out.mkdir(parents=True, exist_ok=True)
    tokens = torch.randint(0, n_sym, (1, 11))
    nets: dict[str, Any] = {}
    enc = {"type": "ConvTextEncoder", "config": {"num_symbols": n_sym, "dim": 128, "layers": 3, "kernel": 5}}
    export(enc, {"tokens": tokens}, {"encodings": []}, {"tokens": {0: "b", 1: "n"}, "encodings": {0: "b", 1: "n"}},
           out / "text_encoder.onnx", seed=1)
    nets["text_encoder"] = {"file": "text_encoder.onnx", "role": "encoder", "arch": enc, "max_batch_size": 8, "context_tokens": 6,
                            "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"encodings": tensor("float32", [-1, 128])}}
    dur = {"type": "DurationPredictor", "config": {"num_symbols": n_sym, "dim": 64, "layers": 2, "kernel": 3, "mean_frames": 6.0}}
    export(dur, {"tokens": tokens}, {"durations": []}, {"tokens": {0: "b", 1: "n"}, "durations": {0: "b", 1: "n"}},
           out / "duration_predictor.onnx", seed=2)
    nets["duration_predictor"] = {"file": "duration_predictor.onnx", "role": "encoder", "arch": dur, "max_batch_size": 8,
                                  "context_tokens": 2,
                                  "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"durations": tensor("float32", [-1])}}
    dec = {"type": "ConvDecoder", "config": {"in_dim": 128, "hidden": 256, "n_mels": 80, "layers": 3, "kernel": 5}}
    export(dec, {"upsampled": torch.randn(1, 40, 128)}, {"mel": []}, {"upsampled": {0: "b", 1: "t"}, "mel": {0: "b", 1: "t"}},
           out / "decoder.onnx", seed=3)
    nets["decoder"] = {"file": "decoder.onnx", "role": "decoder", "arch": dec, "max_batch_size": 8, "context_frames": 6,
                       "inputs": {"upsampled": tensor("float32", [-1, 128])}, "outputs": {"mel": tensor("float32", [-1, 80])}}
    addon = {
        "name": "fastvoice", "version": "0.1.0",
        "description": "Duration-based acoustic model: text encoder + duration predictor -> Upsampler -> "
                       "convolutional Decoder. Seeded placeholder weights.",
        "license": "MIT", "audio": AUDIO, "text": TEXT, "networks": nets,
        # the seed's stack, with the encoders run segment by segment so the first frames of a long
        # text do not wait for all of it; frames are identical (tests/unit/test_streaming.py)
        "stack": [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"},
                   "streamable_block": {"type": "Upsampler"}},
                  {"type": "Decoder"}],
    }
    (out / "addon.json").write_text(json.dumps(addon, indent=2) + "\n")


def attention_addon(out: Path) -> None:
    n_sym = CharFrontend().num_symbols
    out.mkdir(parents=True, exist_ok=True)
    nets: dict[str, Any] = {}
    enc = {"type": "AttentionEncoder", "config": {"num_symbols": n_sym, "dim": 128, "layers": 3, "kernel": 5}}
    export(enc, {"tokens": torch.randint(0, n_sym, (1, 11))}, {"memory": []},
           {"tokens": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"}}, out / "encoder.onnx", seed=4)
    nets["encoder"] = {"file": "encoder.onnx", "role": "encoder", "arch": enc, "max_batch_size": 8, "context_tokens": 6,
                       "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"memory": tensor("float32", [-1, 128])}}
    step = {"type": "AttentionDecoderStep", "config": {"n_mels": 80, "dim": 128, "hidden": 256, "prenet": 128}}
    align = torch.zeros(1, 11)
    align[0, 0] = 1
    examples = {"prev_mel": torch.zeros(1, 80), "state": torch.zeros(1, 256), "alignment": align, "memory": torch.randn(1, 11, 128)}
    dyn = {"prev_mel": {0: "b"}, "state": {0: "b"}, "alignment": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"},
           "mel": {0: "b"}, "stop_logit": {0: "b"}, "state_out": {0: "b"}, "alignment_out": {0: "b", 1: "n"}}
    export(step, examples, {"mel": [], "stop_logit": [], "state_out": [], "alignment_out": []}, dyn, out / "decoder_step.onnx", seed=5)
    nets["decoder_step"] = {
        "file": "decoder_step.onnx", "role": "decoder", "arch": step, "max_batch_size": 8,
        "inputs": {"prev_mel": tensor("float32", [80]), "state": tensor("float32", [256]),
                   "alignment": tensor("float32", [-1]), "memory": tensor("float32", [-1, 128])},
        "outputs": {"mel": tensor("float32", [80]), "stop_logit": tensor("float32", [1]),
                    "state_out": tensor("float32", [256]), "alignment_out": tensor("float32", [-1])}}
    addon = {
        "name": "tacovoice", "version": "0.1.0",
        "description": "Legacy attention acoustic model: encoder -> autoregressive attention decoder with a stop "
                       "token, one frame per step. Seeded placeholder weights.",
        "license": "MIT", "audio": AUDIO, "text": TEXT, "networks": nets,
        # the encoder runs inside the decoder, just ahead of the attention (same frames as encoding first)
        "stack": [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}, "chunk_frames": 8}],
    }
    (out / "addon.json").write_text(json.dumps(addon, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("addons"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    duration_addon(args.out / "fastvoice")
    attention_addon(args.out / "tacovoice")
    print(f"wrote {args.out / 'fastvoice'} and {args.out / 'tacovoice'}")


if __name__ == "__main__":
    main()
