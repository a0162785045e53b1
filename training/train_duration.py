"""Train the duration-based voice (fastvoice) on the espeak-ng teacher and export it as an addon.

    python -m training.train_duration --data data/teacher --out addons/fastvoice [--minutes 14] [--steps N]

Text encoder and duration predictor read phoneme ids; the decoder reads the encodings repeated by the
teacher's durations (the predicted ones at synthesis time).  Seeded; stops at the time budget (or
``--steps``); exports ONNX and addon.json, and writes ``training.json`` (for the model card).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melstream.nets import MelDecoder, PhonemeDurationPredictor, PhonemeEncoder
from training.dataset import Batch, Utterance, collate
from training.export import AUDIO, export_masked, tensor, with_length, write_addon
from training.loop import add_common_args, prepare, run_record, train

ENC = {"dim": 192, "layers": 4, "kernel": 5}
DUR = {"dim": 128, "layers": 3, "kernel": 3}
DEC = {"in_dim": 192, "hidden": 256, "n_mels": 80, "layers": 6, "kernel": 5}


class Voice(torch.nn.Module):
    def __init__(self, num_symbols: int, mel_mean: float, dropout: float) -> None:
        super().__init__()
        self.encoder = PhonemeEncoder(num_symbols, **ENC, dropout=dropout)
        self.duration = PhonemeDurationPredictor(num_symbols, **DUR, dropout=dropout)
        self.decoder = MelDecoder(**DEC, dropout=dropout, mel_mean=mel_mean)

    def losses(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder.masked(b.tokens, b.token_mask)
        up = torch.gather(enc, 1, b.frame_token.unsqueeze(-1).expand(-1, -1, enc.shape[-1])) * b.frame_mask
        mel = self.decoder.masked(up, b.frame_mask)
        mel_l1 = ((mel - b.mel).abs() * b.frame_mask).sum() / (b.frame_mask.sum() * mel.shape[-1])
        log_d = self.duration.log_durations(b.tokens, b.token_mask)
        mask = b.token_mask.squeeze(-1)
        dur = (((log_d - torch.log1p(b.durations.float())) ** 2) * mask).sum() / mask.sum()
        return mel_l1, dur


def evaluate(model: Voice, utts: list[Utterance]) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        mel_l1, dur, frames_err = [], [], []
        for i in range(0, len(utts), 16):
            part = utts[i:i + 16]
            m, d = model.losses(collate(part))
            mel_l1.append(float(m) * len(part))
            dur.append(float(d) * len(part))
            for u in part:
                pred = model.duration(torch.from_numpy(u.tokens)[None])[0].numpy()
                frames_err.append(abs(np.floor(pred + 0.5).sum() - len(u.mel)) / len(u.mel))
    model.train()
    n = len(utts)
    return {"mel_l1": sum(mel_l1) / n, "log_duration_mse": sum(dur) / n, "length_error": float(np.mean(frames_err))}


# the sizes the variable axes are compiled for in fixed-shape profiles: token segments (16 first, then 96, plus
# context on both sides) and decoder windows (chunks of 32 then 64 frames plus 12 of context on each side)
TOKEN_BUCKETS = [32, 64, 128, 256]
FRAME_BUCKETS = [32, 64, 96]


def export(model: Voice, symbols: list[str], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    n_sym = len(symbols)
    model.eval()
    tokens = torch.randint(1, n_sym, (1, 11))
    # with a length input: a padded input gives the unpadded values (fixed-shape profiles pad to a bucket)
    export_masked(model.encoder, {"tokens": tokens}, ["encodings"], {"tokens": {0: "b", 1: "n"}, "encodings": {0: "b", 1: "n"}},
                  out / "text_encoder.onnx", size=11)
    export_masked(model.duration, {"tokens": tokens}, ["durations"], {"tokens": {0: "b", 1: "n"}, "durations": {0: "b", 1: "n"}},
                  out / "duration_predictor.onnx", size=11)
    export_masked(model.decoder, {"upsampled": torch.randn(1, 40, ENC["dim"])}, ["mel"],
                  {"upsampled": {0: "b", 1: "t"}, "mel": {0: "b", 1: "t"}}, out / "decoder.onnx", size=40)
    nets = {
        "text_encoder": {"file": "text_encoder.onnx", "role": "encoder", "max_batch_size": 8, "buckets": TOKEN_BUCKETS,
                         "context_tokens": ENC["layers"] * (ENC["kernel"] - 1) // 2,
                         "arch": {"type": "PhonemeEncoder", "config": {"num_symbols": n_sym, **ENC}},
                         "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"encodings": tensor("float32", [-1, ENC["dim"]])}},
        "duration_predictor": {"file": "duration_predictor.onnx", "role": "encoder", "max_batch_size": 8, "buckets": TOKEN_BUCKETS,
                               "context_tokens": DUR["layers"] * (DUR["kernel"] - 1) // 2,
                               "arch": {"type": "PhonemeDurationPredictor", "config": {"num_symbols": n_sym, **DUR}},
                               "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"durations": tensor("float32", [-1])}},
        "decoder": {"file": "decoder.onnx", "role": "decoder", "max_batch_size": 8, "buckets": FRAME_BUCKETS,
                    "context_frames": DEC["layers"] * (DEC["kernel"] - 1) // 2,
                    "arch": {"type": "MelDecoder", "config": {**DEC, "mel_mean": meta["mel_mean"]}},
                    "inputs": {"upsampled": tensor("float32", [-1, ENC["dim"]])}, "outputs": {"mel": tensor("float32", [-1, 80])}},
    }
    nets = {name: with_length(net) for name, net in nets.items()}
    write_addon(out, {
        "name": "fastvoice", "version": "1.2.0",
        "description": "Duration-based acoustic model trained on an espeak-ng teacher: phoneme encoder + duration "
                       "predictor -> Upsampler -> convolutional Decoder. See MODEL_CARD.md.",
        "license": "GPL-3.0-or-later (weights derived from espeak-ng output; see MODEL_CARD.md)",
        "audio": AUDIO, "text": {"frontend": "espeak-phonemes", "max_chars": 10000, "symbols": symbols}, "networks": nets,
        # the seed's stack with the encoders run segment by segment (identical frames, flat time to first frame)
        "stack": [{"type": "SegmentedPipeline", "sequence_block": {"type": "Encoders"}, "streamable_block": {"type": "Upsampler"}},
                  # chunks of 32, then 64 frames: first audio as soon as ever, a quarter more throughput than
                  # fixed 32-frame chunks; bigger chunks hold up other streams' first chunks (BENCHMARKS.md)
                  {"type": "Decoder", "max_chunk_frames": 64}],
    })
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, out="addons/fastvoice", minutes=14.0, batch_frames=6000)
    args = ap.parse_args(argv)
    rng, symbols, train_set, val = prepare(args, val_limit=64)
    mel_mean = float(np.mean([u.mel.mean() for u in train_set]))
    model = Voice(len(symbols), mel_mean, dropout=0.1)
    params = sum(p.numel() for p in model.parameters())
    print(f"fastvoice: {len(train_set)} train / {len(val)} val utterances, {len(symbols)} symbols, {params / 1e6:.2f} M parameters")

    def losses(batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mel_l1, dur = model.losses(batch)
        return mel_l1 + dur, {"mel_l1": mel_l1, "log_dur_mse": dur}

    step, seconds, log = train(model, train_set, args, rng, losses=losses, evaluate=lambda: evaluate(model, val),
                               warmup_steps=200, print_every=100, eval_every=500)
    final = evaluate(model, val)
    print(f"done: {step} steps in {seconds:.0f} s; validation {final}")
    export(model, symbols, args.out, run_record("fastvoice", args, step=step, seconds=seconds, model=model, train_set=train_set,
                                                mel_mean=mel_mean, validation=final, log=log))


if __name__ == "__main__":
    main()
