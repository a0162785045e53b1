"""DSP effects on mel chunks: stateless per frame, so streaming cannot change their answer."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.blocks import Contract, StreamableBlock, Tensors
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


@register_component("Gain")
class Gain(StreamableBlock):
    """Upstream chunks in: ``mel`` ``[c, n_mels]`` (natural-log magnitude).  Chunks out: the same
    frames, louder by ``gain_db`` decibels (``+ gain_db * ln(10) / 20``) and, if ``tilt_db`` is
    set, with a spectral tilt rising linearly from 0 dB at the lowest bin to ``tilt_db`` at the
    highest (brighter for positive values)."""

    contract = Contract(takes={"mel": ("T", "n_mels")}, emits={"mel": ("T", "n_mels")}, keeps_upstream=True)

    def __init__(self, ctx: BuildContext, *, gain_db: float = 0.0, tilt_db: float = 0.0, path: str = "") -> None:
        super().__init__(ctx, path=path)
        if not (-60.0 <= gain_db <= 60.0 and -60.0 <= tilt_db <= 60.0):
            raise StackError(f"{path}: gain_db and tilt_db must be within ±60 dB, got {gain_db}, {tilt_db}")
        self.gain_db = float(gain_db)
        self.tilt_db = float(tilt_db)
        n_mels = ctx.addon.audio.n_mels
        db = self.gain_db + self.tilt_db * np.linspace(0.0, 1.0, n_mels)
        self.offset = (db * math.log(10.0) / 20.0).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"gain_db": self.gain_db, "tilt_db": self.tilt_db}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        if upstream is None:
            raise SynthesisError(f"{self.path}: Gain needs an upstream block that makes mel frames")
        for chunk in upstream:
            yield {**chunk, "mel": chunk["mel"] + self.offset}
