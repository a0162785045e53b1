"""The training loop both voices share: seeded, stopped by a wall-clock budget (or a step count)."""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.dataset import Batch, Utterance, batches, load_split, load_symbols


def add_common_args(ap: argparse.ArgumentParser, *, out: str, minutes: float, batch_frames: int) -> None:
    ap.add_argument("--data", type=Path, default=Path("data/teacher"))
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--minutes", type=float, default=minutes, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps (CI smoke runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-frames", type=int, default=batch_frames)
    ap.add_argument("--limit", type=int, default=None, help="use only this many training utterances")


def prepare(args: argparse.Namespace, *, val_limit: int) -> tuple[random.Random, list[str], list[Utterance], list[Utterance]]:
    """Seed torch and the batch order, set torch's threads, load the symbol inventory and the splits:
    ``(rng, symbols, train_set, val)``."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    symbols = load_symbols(args.data)
    return rng, symbols, load_split(args.data, "train", symbols, limit=args.limit), load_split(args.data, "val", symbols, limit=val_limit)


def run_record(voice: str, args: argparse.Namespace, *, step: int, seconds: float, model: torch.nn.Module,
               train_set: list[Utterance], **extra: Any) -> dict[str, Any]:
    """What training.json records of a run: the budget spent, the set-up, and ``extra`` (validation, log…)."""
    from training.export import AUDIO

    frames = sum(len(u.mel) for u in train_set)
    return {"voice": voice, "steps": step, "seconds": round(seconds), "threads": args.threads, "seed": args.seed,
            "parameters": sum(p.numel() for p in model.parameters()), "train_utterances": len(train_set),
            "train_hours": round(frames * AUDIO["hop_length"] / AUDIO["sample_rate"] / 3600, 2), **extra}


def train(model: torch.nn.Module, train_set: list[Utterance], args: argparse.Namespace, rng: random.Random, *,
          losses: Callable[[Batch, int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
          evaluate: Callable[[], dict[str, float]], warmup_steps: int, print_every: int, eval_every: int,
          ) -> tuple[int, float, list[dict[str, Any]]]:
    """AdamW with warm-up then cosine decay to a tenth over the time budget, gradient clipping at 1.
    ``losses(batch, step)`` returns the loss to minimise and the parts to print.  Returns (steps, seconds, log)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    budget_s = args.minutes * 60
    start = time.monotonic()
    log: list[dict[str, Any]] = []
    step = 0
    for batch in batches(train_set, max_frames=args.batch_frames, rng=rng):
        elapsed = time.monotonic() - start
        if elapsed >= budget_s or (args.steps is not None and step >= args.steps):
            break
        frac = min(elapsed / budget_s, 1.0)
        lr = 1e-3 * min(1.0, (step + 1) / warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, parts = losses(batch, step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % print_every == 0 or step == 1:
            print(f"step {step:5d} {elapsed:6.0f}s lr {lr:.2e} " + " ".join(f"{k} {v.item():.3f}" for k, v in parts.items()), flush=True)
        if step % eval_every == 0:
            log.append({"step": step, "seconds": round(elapsed), **evaluate()})
            print("  val", log[-1], flush=True)
    return step, time.monotonic() - start, log
