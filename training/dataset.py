"""Teacher data as written by ``training.teacher``: per split ``meta.jsonl`` + ``mels.npy``."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Utterance:
    id: str
    text: str
    tokens: np.ndarray  # [N] int64 symbol ids (end symbol included, as the serving front end makes them)
    durations: np.ndarray  # [N] int64 frames
    mel: np.ndarray  # [T, 80] float32, T == durations.sum()


def load_symbols(root: Path) -> list[str]:
    return list(json.loads((root / "symbols.json").read_text()))


def load_split(root: Path, split: str, symbols: list[str], *, limit: int | None = None) -> list[Utterance]:
    index = {s: i for i, s in enumerate(symbols)}
    mels = np.load(root / split / "mels.npy", mmap_mode="r")
    out = []
    with open(root / split / "meta.jsonl") as f:
        for line in f:
            m = json.loads(line)
            tokens = [index[t] for t in m["tokens"]] + [index["~"]]  # the front end appends the end symbol
            durations = list(m["durations"]) + [0]
            mel = np.array(mels[m["offset"]:m["offset"] + m["n_frames"]], dtype=np.float32)  # a copy, not a view of the map
            if sum(durations) != len(mel):
                raise ValueError(f"{root / split}: utterance {m['id']}: durations sum to {sum(durations)}, mel has {len(mel)}")
            out.append(Utterance(m["id"], m["text"], np.array(tokens, np.int64), np.array(durations, np.int64), mel))
            if limit is not None and len(out) >= limit:
                break
    return out


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, N] (0-padded)
    token_mask: torch.Tensor  # [B, N, 1]
    durations: torch.Tensor  # [B, N]
    mel: torch.Tensor  # [B, T, 80]
    frame_mask: torch.Tensor  # [B, T, 1]
    frame_token: torch.Tensor  # [B, T] index of the token each frame belongs to (0 on padding)
    n_tokens: torch.Tensor  # [B]
    n_frames: torch.Tensor  # [B]


def collate(utts: list[Utterance]) -> Batch:
    b = len(utts)
    n = max(len(u.tokens) for u in utts)
    t = max(len(u.mel) for u in utts)
    tokens = torch.zeros(b, n, dtype=torch.long)
    durations = torch.zeros(b, n, dtype=torch.long)
    mel = torch.zeros(b, t, utts[0].mel.shape[1])
    frame_token = torch.zeros(b, t, dtype=torch.long)
    for i, u in enumerate(utts):
        tokens[i, :len(u.tokens)] = torch.from_numpy(u.tokens)
        durations[i, :len(u.tokens)] = torch.from_numpy(u.durations)
        mel[i, :len(u.mel)] = torch.from_numpy(u.mel)
        frame_token[i, :len(u.mel)] = torch.repeat_interleave(torch.arange(len(u.tokens)), torch.from_numpy(u.durations))
    n_tokens = torch.tensor([len(u.tokens) for u in utts])
    n_frames = torch.tensor([len(u.mel) for u in utts])
    token_mask = (torch.arange(n)[None, :] < n_tokens[:, None]).float().unsqueeze(-1)
    frame_mask = (torch.arange(t)[None, :] < n_frames[:, None]).float().unsqueeze(-1)
    return Batch(tokens, token_mask, durations, mel, frame_mask, frame_token, n_tokens, n_frames)


def batches(utts: list[Utterance], *, max_frames: int, rng: random.Random) -> Iterator[Batch]:
    """Endless shuffled batches of utterances of similar length, about ``max_frames`` padded frames each."""
    order = sorted(range(len(utts)), key=lambda i: len(utts[i].mel))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * len(utts[i].mel) > max_frames:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    while True:
        rng.shuffle(groups)
        for g in groups:
            yield collate([utts[i] for i in g])
