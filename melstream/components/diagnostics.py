"""Diagnostics: per-block timing of any StreamableBlock, without changing its frames."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.blocks import Block, Shapes, StreamableBlock, Tensors
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext

log = logging.getLogger("melstream.diagnostics")


@dataclass
class Timing:
    """One utterance through the wrapped block: seconds to its first chunk and per chunk."""

    block: str
    first_chunk_s: float | None = None
    chunk_s: list[float] = field(default_factory=list)
    frames: int = 0

    @property
    def total_s(self) -> float:
        return sum(self.chunk_s)


@register_component("Timed")
class Timed(StreamableBlock):
    """Wraps ``block`` (any StreamableBlock, even a whole pipeline) and records, per utterance, the
    time spent producing each chunk *inside* it (upstream time included, consumer time excluded).

    Chunks pass through unchanged.  ``timings`` keeps the last ``keep`` utterances; each finished
    utterance is logged at INFO on ``melstream.diagnostics``.
    """

    child_slots = {"block": ("streamable", False)}

    def __init__(self, ctx: BuildContext, *, block: StreamableBlock, label: str = "", keep: int = 100,
                 path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.block = block
        self.label = label or block.type_name or type(block).__name__
        self.keep = keep
        self.timings: list[Timing] = []

    def children(self) -> list[Block]:
        return [self.block]

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        return self.block.check(context, upstream, sizes)  # chunks pass through unchanged

    def params(self) -> dict[str, Any]:
        return {"label": self.label}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        record = Timing(self.label)
        self.timings = (self.timings + [record])[-self.keep:]
        it = self.block.generate(context, upstream)
        start = time.perf_counter()
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                t1 = time.perf_counter()
                record.chunk_s.append(t1 - t0)
                if record.first_chunk_s is None:
                    record.first_chunk_s = t1 - start
                record.frames += len(next(iter(chunk.values()))) if chunk else 0
                yield chunk
        finally:
            log.info("%s: %d chunks, %d frames, first chunk %.1f ms, busy %.1f ms", self.label, len(record.chunk_s),
                     record.frames, 1e3 * (record.first_chunk_s or 0.0), 1e3 * record.total_s)
