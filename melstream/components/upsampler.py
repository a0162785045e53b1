"""Upsampler: repeats each token's encoding for its predicted number of frames, on demand."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.blocks import Contract, StreamableBlock, Tensors, chunk_size
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


def frame_counts(durations: np.ndarray, *, pace: float = 1.0, max_frames_per_token: int = 100) -> np.ndarray:
    """Integer frames per token: durations / pace, rounded half up, clipped to [0, max]."""
    if pace <= 0 or not np.isfinite(pace):
        raise SynthesisError(f"pace must be a positive number, got {pace}")
    d = np.nan_to_num(np.asarray(durations, dtype=np.float64) / pace, nan=0.0, posinf=max_frames_per_token)
    return np.clip(np.floor(d + 0.5), 0, max_frames_per_token).astype(np.int64)


@register_component("Upsampler")
class Upsampler(StreamableBlock):
    """Context in: ``encodings`` ``[N, D]``, ``durations`` ``[N]`` (frames), optional ``pace`` ``[]``.
    Chunks out: ``upsampled`` ``[c, D]`` with ``c = chunk_frames`` (the last chunk may be shorter);
    ``T = sum(round(durations / pace))`` frames in all, and ``frame_tokens`` ``[c]`` int64: the token each
    frame speaks (the row of ``encodings`` it repeats; word timestamps, :mod:`melstream.words`).  Frames are
    made only when pulled."""

    def __init__(self, ctx: BuildContext, *, chunk_frames: int = 32, max_frames_per_token: int = 100,
                 encodings: str = "encodings", durations: str = "durations", path: str = "") -> None:
        super().__init__(ctx, path=path)
        if chunk_frames < 1:
            raise StackError(f"{path}.chunk_frames: must be >= 1, got {chunk_frames}")
        self.chunk_frames = chunk_frames
        self.max_frames_per_token = max_frames_per_token
        self.keys = (encodings, durations)
        self.contract = Contract(reads={encodings: ("N", "D"), durations: ("N",)}, emits={"upsampled": ("T", "D"), "frame_tokens": ("T",)})

    def params(self) -> dict[str, Any]:
        return {"chunk_frames": self.chunk_frames}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        enc_key, dur_key = self.keys
        for k in self.keys:
            if k not in context:
                raise SynthesisError(f"{self.path}: Upsampler needs {k!r} in the context, which has {sorted(context)}")
        encodings = context[enc_key]
        counts = frame_counts(context[dur_key], pace=float(context.get("pace", 1.0)),
                              max_frames_per_token=self.max_frames_per_token)
        if len(counts) != len(encodings):
            raise SynthesisError(f"{self.path}: {len(counts)} durations for {len(encodings)} encodings")
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        step = chunk_size(context, self.chunk_frames)
        for start in range(0, total, step):
            frames = np.arange(start, min(start + step, total))
            token = np.searchsorted(ends, frames, side="right")
            yield {"upsampled": encodings[token], "frame_tokens": token.astype(np.int64, copy=False)}
