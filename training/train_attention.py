"""Train the legacy attention voice (tacovoice) on the espeak-ng teacher and export it as an addon.

    python -m training.train_attention --data data/teacher --out addons/tacovoice [--minutes 14] [--steps N]

Encoder -> autoregressive decoder with forward (monotonic) attention and a stop token, one frame per
step, teacher-forced (``--free-mel-fraction`` of the batches after 200 steps can get the model's own previous
frames instead; off by default).  The attention is teacher-forced: each step starts from the token espeak-ng
spoke at the previous frame, and the decision to move on is supervised (advance BCE) next to mel L1
and stop BCE.  At synthesis time the voice attends freely (its own alignment, its own frames); the
validation figures are measured that way (alignment accuracy, mel L1 with free attention).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from melstream.nets import AttentionDecoderStep, PhonemeEncoder
from training.dataset import Batch, Utterance, collate
from training.export import AUDIO, export_masked, tensor, with_length, write_addon
from training.loop import add_common_args, prepare, run_record, train

ENC = {"dim": 192, "layers": 4, "kernel": 5}
STEP: dict[str, Any] = {"n_mels": 80, "dim": 192, "hidden": 256, "prenet": 128, "hard": True}


def guide_targets(b: Batch) -> torch.Tensor:
    """Per frame, the token the attention should be on.  Forward attention advances at most one token
    per frame, so tokens the teacher gives no frame (word boundaries) are visited for one frame taken
    from the token before them."""
    targets = b.frame_token.clone()
    for i in range(len(targets)):
        d = b.durations[i, :int(b.n_tokens[i])].clone()
        for j in range(1, len(d)):  # the end symbol too: its one frame is where the stop token fires
            if d[j] == 0 and d[j - 1] > 1:
                d[j - 1] -= 1
                d[j] = 1
        idx = torch.repeat_interleave(torch.arange(len(d)), d)
        targets[i, :len(idx)] = idx
    return targets


class Voice(torch.nn.Module):
    def __init__(self, num_symbols: int, dropout: float) -> None:
        super().__init__()
        self.encoder = PhonemeEncoder(num_symbols, **ENC, dropout=dropout)
        self.step = AttentionDecoderStep(**STEP, prenet_dropout=0.5)

    def run(self, b: Batch, targets: torch.Tensor | None = None, *, free: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mel ``[B, T, 80]``, stop and advance logits ``[B, T]``, alignments ``[B, T, N]`` over the batch's
        frames.  Mel frames are teacher-forced unless ``free``; with ``targets`` the attention is too:
        each step starts from the teacher's token (one-hot), so the advance decision is learnt locally
        instead of through hundreds of steps of attention recursion."""
        memory = self.encoder.masked(b.tokens, b.token_mask)
        bsz, n = b.tokens.shape
        end_mask = F.one_hot(b.n_tokens - 1, n).float()
        state = memory.new_zeros(bsz, STEP["hidden"])
        alignment = F.one_hot(torch.zeros(bsz, dtype=torch.long), n).float()
        prev = memory.new_zeros(bsz, 80)
        mels, stops, advances, aligns = [], [], [], []
        for t in range(b.mel.shape[1]):
            if targets is not None:
                alignment = F.one_hot(targets[:, t - 1] if t else torch.zeros(bsz, dtype=torch.long), n).float()
            mel, stop, state, alignment, advance = self.step.step(prev, state, alignment, memory, end_mask)
            mels.append(mel)
            stops.append(stop[:, 0])
            advances.append(advance[:, 0])
            aligns.append(alignment)
            prev = mel.detach() if free else b.mel[:, t]  # free: its own frames, as at synthesis time
        return torch.stack(mels, 1), torch.stack(stops, 1), torch.stack(advances, 1), torch.stack(aligns, 1)

    def losses(self, b: Batch, targets: torch.Tensor, *, forced: bool = True, free_mel: bool = False) -> dict[str, torch.Tensor]:
        mel, stop, advance, align = self.run(b, targets if forced else None, free=free_mel)
        fmask = b.frame_mask.squeeze(-1)
        previous = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)
        moved = (targets > previous).float()
        advance_bce = (F.binary_cross_entropy_with_logits(advance, moved, reduction="none") * fmask).sum() / fmask.sum()
        mel_l1 = ((mel - b.mel).abs() * b.frame_mask).sum() / (fmask.sum() * 80)
        stop_target = (torch.arange(b.mel.shape[1])[None, :] >= (b.n_frames[:, None] - 1)).float()
        stop_bce = F.binary_cross_entropy_with_logits(stop, stop_target, pos_weight=torch.tensor(10.0), reduction="none")
        stop_bce = (stop_bce * fmask).sum() / fmask.sum()
        picked = torch.gather(align, 2, targets.unsqueeze(-1)).squeeze(-1)
        guide = -(torch.log(picked + 1e-5) * fmask).sum() / fmask.sum()
        return {"mel_l1": mel_l1, "stop_bce": stop_bce, "advance_bce": advance_bce, "guide": guide, "align_acc":
                (((align.argmax(-1) == targets).float() * fmask).sum() / fmask.sum()).detach()}


def evaluate(model: Voice, utts: list[Utterance]) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for i in range(0, len(utts), 16):
            b = collate(utts[i:i + 16])
            for k, v in model.losses(b, guide_targets(b), forced=False).items():  # free-running attention
                sums[k] = sums.get(k, 0.0) + float(v) * len(utts[i:i + 16])
    model.train()
    return {k: round(v / len(utts), 4) for k, v in sums.items()}


def export(model: Voice, symbols: list[str], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    n_sym = len(symbols)
    model.eval()
    # with a length input: a padded input gives the unpadded values (fixed-shape profiles pad to a bucket)
    export_masked(model.encoder, {"tokens": torch.randint(1, n_sym, (1, 11))}, ["memory"],
                  {"tokens": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"}}, out / "encoder.onnx", size=11)
    align = torch.zeros(1, 11)
    align[0, 0] = 1
    examples = {"prev_mel": torch.zeros(1, 80), "state": torch.zeros(1, STEP["hidden"]), "alignment": align,
                "memory": torch.randn(1, 11, ENC["dim"])}
    dyn = {"prev_mel": {0: "b"}, "state": {0: "b"}, "alignment": {0: "b", 1: "n"}, "memory": {0: "b", 1: "n"},
           "mel": {0: "b"}, "stop_logit": {0: "b"}, "state_out": {0: "b"}, "alignment_out": {0: "b", 1: "n"}}
    export_masked(model.step, examples, ["mel", "stop_logit", "state_out", "alignment_out"], dyn, out / "decoder_step.onnx", size=11)
    nets = {
        "encoder": {"file": "encoder.onnx", "role": "encoder", "max_batch_size": 8, "buckets": [32, 64, 128, 256],
                    "context_tokens": ENC["layers"] * (ENC["kernel"] - 1) // 2,
                    "arch": {"type": "PhonemeEncoder", "config": {"num_symbols": n_sym, **ENC}},
                    "inputs": {"tokens": tensor("int64", [-1])}, "outputs": {"memory": tensor("float32", [-1, ENC["dim"]])}},
        "decoder_step": {
            # a longer memory runs as a window that follows the attention (melstream.components.attention)
            "file": "decoder_step.onnx", "role": "decoder", "max_batch_size": 8, "buckets": [32, 64, 128, 256, 512],
            "arch": {"type": "AttentionDecoderStep", "config": dict(STEP)},
            "inputs": {"prev_mel": tensor("float32", [80]), "state": tensor("float32", [STEP["hidden"]]),
                       "alignment": tensor("float32", [-1]), "memory": tensor("float32", [-1, ENC["dim"]])},
            "outputs": {"mel": tensor("float32", [80]), "stop_logit": tensor("float32", [1]),
                        "state_out": tensor("float32", [STEP["hidden"]]), "alignment_out": tensor("float32", [-1])}},
    }
    nets = {name: with_length(net) for name, net in nets.items()}
    write_addon(out, {
        "name": "tacovoice", "version": "1.1.0",
        "description": "Legacy attention acoustic model trained on an espeak-ng teacher: encoder -> autoregressive "
                       "forward-attention decoder with a stop token, one frame per step. See MODEL_CARD.md.",
        "license": "GPL-3.0-or-later (weights derived from espeak-ng output; see MODEL_CARD.md)",
        "audio": AUDIO, "text": {"frontend": "espeak-phonemes", "max_chars": 10000, "symbols": symbols}, "networks": nets,
        "stack": [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}, "chunk_frames": 8}],
    })
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, out="addons/tacovoice", minutes=14.0, batch_frames=4000)
    # 0.5 was tried (same budget): it stalled on 7 of 40 held-out sentences where the shipped voice stalls on none
    ap.add_argument("--free-mel-fraction", type=float, default=0.0, help="share of batches fed the model's own frames")
    args = ap.parse_args(argv)
    rng, symbols, train_set, val = prepare(args, val_limit=32)
    model = Voice(len(symbols), dropout=0.1)
    params = sum(p.numel() for p in model.parameters())
    print(f"tacovoice: {len(train_set)} train / {len(val)} val utterances, {len(symbols)} symbols, {params / 1e6:.2f} M parameters")

    def losses(batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # optionally feed the decoder its own frames (attention still teacher-forced) after 200 steps; the
        # draw happens only when enabled, so the default run keeps the batch order of the shipped voice
        free = args.free_mel_fraction > 0 and step >= 200 and rng.random() < args.free_mel_fraction
        parts = model.losses(batch, guide_targets(batch), free_mel=free)
        return parts["mel_l1"] + parts["stop_bce"] + parts["advance_bce"], parts

    step, seconds, log = train(model, train_set, args, rng, losses=losses, evaluate=lambda: evaluate(model, val),
                               warmup_steps=100, print_every=25, eval_every=200)
    final = evaluate(model, val)
    print(f"done: {step} steps in {seconds:.0f} s; validation {final}")
    export(model, symbols, args.out, run_record("tacovoice", args, step=step, seconds=seconds, model=model, train_set=train_set,
                                                validation=final, log=log))


if __name__ == "__main__":
    main()
