"""Tiny synthetic voices for the test tiers: no trained voice, no espeak-ng.

Two addons with the shipped voices' architectures (melstream/nets.py) at toy sizes and seeded random
weights, exported to ONNX by training/'s own exporter (:func:`training.export.export_onnx`, the
TorchScript exporter with ``dynamo=False``), reading text through the ``english-chars`` front end:

* ``tinyfast`` — duration-based: ``PhonemeEncoder`` + ``PhonemeDurationPredictor`` → Upsampler →
  ``MelDecoder``; its stack is fastvoice's (``SegmentedPipeline(Encoders, Upsampler) → Decoder`` with
  ``max_chunk_frames``).
* ``tinytaco`` — attention: ``PhonemeEncoder`` memory → ``AttentionDecoderStep``; its stack is
  tacovoice's (``AttentionDecoder`` with an ``encoder``).  Untrained forward attention still walks to the
  end symbol and stops there: each step moves it on with probability ~sigmoid(advance bias).

Each network declares the same facts as the shipped ones (``context_tokens``, ``context_frames``,
``arch`` for the torch runner, ``max_batch_size``).  Building both takes about a second.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SEED = 1234
N_MELS = 80
FAST = "tinyfast"
TACO = "tinytaco"

# toy sizes: receptive half-widths of 2 tokens (encoder), 1 token (durations), 4 frames (decoder)
ENC = {"dim": 8, "layers": 2, "kernel": 3}
DUR = {"dim": 8, "layers": 1, "kernel": 3}
DEC = {"in_dim": ENC["dim"], "hidden": 16, "n_mels": N_MELS, "layers": 2, "kernel": 5}
STEP = {"n_mels": N_MELS, "dim": ENC["dim"], "hidden": 16, "prenet": 8}
MEAN_FRAMES = 6.0  # frames per token the untrained duration predictor is set to give, on average
# the sizes the variable axes are compiled for at fixed shapes: small, so that short texts cross several
TOKEN_BUCKETS = [8, 16, 32]
FRAME_BUCKETS = [16, 48, 72]  # the decoder's largest window: a 64-frame chunk and 4 frames of context on each side
MEMORY_BUCKETS = [8, 16, 32, 64]


def context(cfg: dict[str, int]) -> int:
    """The receptive half-width of a NormConvStack network: ``layers * (kernel - 1) // 2``."""
    return cfg["layers"] * (cfg["kernel"] - 1) // 2


def _jitter(*modules: Any) -> None:
    """Move every parameter off its initial value a little (seeded): untrained LayerNorms all hold ones and
    zeros, and the ONNX exporter stores identical parameters once, under one name, so the torch runner could
    not find the others in the file."""
    import torch

    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))


def _text() -> dict[str, Any]:
    return {"frontend": "english-chars", "max_chars": 10000}


def _common(name: str, description: str) -> dict[str, Any]:
    from training.export import AUDIO

    return {"name": name, "version": "0.0.1", "description": description, "license": "MIT", "audio": dict(AUDIO), "text": _text()}


def build_fast(out: Path) -> Path:
    """Write the ``tinyfast`` addon into ``out`` (created) and return ``out``."""
    import torch

    from melstream.nets import MelDecoder, PhonemeDurationPredictor, PhonemeEncoder
    from melstream.text import SYMBOLS
    from training.export import export_masked, tensor, with_length, write_addon

    out.mkdir(parents=True, exist_ok=True)
    n_sym = len(SYMBOLS)
    torch.manual_seed(SEED)
    encoder = PhonemeEncoder(n_sym, **ENC)
    duration = PhonemeDurationPredictor(n_sym, **DUR)
    decoder = MelDecoder(**DEC, mel_mean=-5.0)
    _jitter(encoder, duration, decoder)
    with torch.no_grad():  # durations around MEAN_FRAMES per token (about 3 to 12), varying from token to token
        duration.proj.bias.fill_(math.log(1.0 + MEAN_FRAMES))
    tokens = torch.randint(1, n_sym, (1, 11))
    export_masked(encoder, {"tokens": tokens}, ["encodings"], {"tokens": {0: "b", 1: "n"}, "encodings": {0: "b", 1: "n"}},
                  out / "text_encoder.onnx", size=11)
    export_masked(duration, {"tokens": tokens}, ["durations"], {"tokens": {0: "b", 1: "n"}, "durations": {0: "b", 1: "n"}},
                  out / "duration_predictor.onnx", size=11)
    export_masked(decoder, {"upsampled": torch.randn(1, 40, ENC["dim"])}, ["mel"],
                  {"upsampled": {0: "b", 1: "t"}, "mel": {0: "b", 1: "t"}}, out / "decoder.onnx", size=40)
    networks = {
        "text_encoder": {"file": "text_encoder.onnx", "role": "encoder", "max_batch_size": 8, "context_tokens": context(ENC),
                         "buckets": TOKEN_BUCKETS,
                         "arch": {"type": "PhonemeEncoder", "config": {"num_symbols": n_sym, **ENC}},
                         "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"encodings": tensor("float32", [-1, ENC["dim"]])}},
        "duration_predictor": {"file": "duration_predictor.onnx", "role": "encoder", "max_batch_size": 8, "context_tokens": context(DUR),
                               "buckets": TOKEN_BUCKETS,
                               "arch": {"type": "PhonemeDurationPredictor", "config": {"num_symbols": n_sym, **DUR}},
                               "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"durations": tensor("float32", [-1])}},
        "decoder": {"file": "decoder.onnx", "role": "decoder", "max_batch_size": 8, "context_frames": context(DEC),
                    "buckets": FRAME_BUCKETS,
                    "arch": {"type": "MelDecoder", "config": {**DEC, "mel_mean": -5.0}},
                    "inputs": {"upsampled": tensor("float32", [-1, ENC["dim"]])}, "outputs": {"mel": tensor("float32", [-1, N_MELS])}},
    }
    networks = {name: with_length(net) for name, net in networks.items()}
    write_addon(out, {
        **_common(FAST, "Synthetic duration-based test voice (seeded random weights)."), "networks": networks,
        "stack": [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "Upsampler"}},
                  {"type": "Decoder", "max_chunk_frames": 64}],
    })
    return out


def build_taco(out: Path) -> Path:
    """Write the ``tinytaco`` addon into ``out`` (created) and return ``out``."""
    import torch

    from melstream.nets import AttentionDecoderStep, PhonemeEncoder
    from melstream.text import SYMBOLS
    from training.export import export_masked, tensor, with_length, write_addon

    out.mkdir(parents=True, exist_ok=True)
    n_sym = len(SYMBOLS)
    torch.manual_seed(SEED + 1)
    encoder = PhonemeEncoder(n_sym, **ENC)
    step = AttentionDecoderStep(**STEP)
    _jitter(encoder, step)
    export_masked(encoder, {"tokens": torch.randint(1, n_sym, (1, 11))}, ["memory"],
                  {"tokens": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"}}, out / "encoder.onnx", size=11)
    align = torch.zeros(1, 11)
    align[0, 0] = 1
    examples = {"prev_mel": torch.zeros(1, N_MELS), "state": torch.zeros(1, STEP["hidden"]), "alignment": align,
                "memory": torch.randn(1, 11, ENC["dim"])}
    dyn = {"prev_mel": {0: "b"}, "state": {0: "b"}, "alignment": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"},
           "mel": {0: "b"}, "stop_logit": {0: "b"}, "state_out": {0: "b"}, "alignment_out": {0: "b", 1: "n"}}
    export_masked(step, examples, ["mel", "stop_logit", "state_out", "alignment_out"], dyn, out / "decoder_step.onnx", size=11)
    networks = {
        "encoder": {"file": "encoder.onnx", "role": "encoder", "max_batch_size": 8, "context_tokens": context(ENC),
                    "buckets": TOKEN_BUCKETS,
                    "arch": {"type": "PhonemeEncoder", "config": {"num_symbols": n_sym, **ENC}},
                    "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"memory": tensor("float32", [-1, ENC["dim"]])}},
        "decoder_step": {
            "file": "decoder_step.onnx", "role": "decoder", "max_batch_size": 8, "buckets": MEMORY_BUCKETS,
            "arch": {"type": "AttentionDecoderStep", "config": dict(STEP)},
            "inputs": {"prev_mel": tensor("float32", [N_MELS]), "state": tensor("float32", [STEP["hidden"]]),
                       "alignment": tensor("float32", [-1]), "memory": tensor("float32", [-1, ENC["dim"]])},
            "outputs": {"mel": tensor("float32", [N_MELS]), "stop_logit": tensor("float32", [1]),
                        "state_out": tensor("float32", [STEP["hidden"]]), "alignment_out": tensor("float32", [-1])}},
    }
    networks = {name: with_length(net) for name, net in networks.items()}
    write_addon(out, {
        **_common(TACO, "Synthetic attention test voice (seeded random weights)."), "networks": networks,
        "stack": [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}, "chunk_frames": 8}],
    })
    return out


def build_addons(root: Path) -> Path:
    """Both synthetic addons under ``root`` (``root/tinyfast``, ``root/tinytaco``), laid out like addons/."""
    build_fast(root / FAST)
    build_taco(root / TACO)
    return root
