"""Vocoders: StreamableBlocks at the end of a stack that turn mel chunks into audio chunks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from melstream.blocks import BuildContext, Contract, StreamableBlock, Tensors, chunk_size
from melstream.components.decoder import windowed
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component
from melstream.runners.base import UnboundRunner
from melstream_client.audio import griffin_lim

if TYPE_CHECKING:
    from melstream.addon import Addon
    from melstream_client.spec import AddonSpec


@register_component("GriffinLim")
class GriffinLim(StreamableBlock):
    """Upstream chunks in: ``mel`` ``[c, n_mels]``.  Chunks out: ``mel`` ``[c', n_mels]`` and
    ``audio`` ``[c' * hop]`` float32, the samples of those frames (frame ``j`` ↔ samples
    ``[j*hop, (j+1)*hop)``).

    Each iteration couples a frame with ``ceil(n_fft/hop) - 1`` neighbours on each side and the
    last overlap-add with ``ceil(n_fft/(2*hop))``, so a chunk computed on a window with
    ``context_frames = iterations * (ceil(n_fft/hop) - 1) + ceil(n_fft/(2*hop))`` frames each side
    (the default) equals the whole-utterance result up to float rounding (tested ≤ 1e-5).  A smaller
    ``context_frames`` trades exactness for speed.  Phase starts at zero, so results are deterministic.
    """

    # chunks carry audio: the voice model then streams AUDIO with MEL
    contract = Contract(takes={"mel": ("T", "n_mels")}, emits={"mel": ("T", "n_mels"), "audio": ("S",)})

    def __init__(self, ctx: BuildContext, *, iterations: int = 32, momentum: float = 0.99, chunk_frames: int = 32,
                 context_frames: int | None = None, gain: float = 1.0, path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.spec = ctx.addon.audio
        if iterations < 0 or not 0.0 <= momentum < 1.0 or chunk_frames < 1 or gain <= 0:
            raise StackError(f"{path}: needs iterations >= 0, 0 <= momentum < 1, chunk_frames >= 1, gain > 0")
        hop, n_fft = self.spec.hop_length, self.spec.n_fft
        exact = iterations * (-(-n_fft // hop) - 1) + -(-n_fft // (2 * hop))
        self.context_frames = exact if context_frames is None else context_frames
        if self.context_frames < 0:
            raise StackError(f"{path}.context_frames: must be >= 0, got {context_frames}")
        self.iterations = iterations
        self.momentum = momentum
        self.chunk_frames = chunk_frames
        self.gain = gain

    def params(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "chunk_frames": self.chunk_frames, "context_frames": self.context_frames}

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """Whole-utterance audio ``[T * hop]`` float32 for ``[T, n_mels]`` log-mel."""
        return self._samples(mel, 0, len(mel), 0)

    def _samples(self, window: np.ndarray, a: int, b: int, lo: int) -> np.ndarray:
        signal = griffin_lim(window, self.spec, iterations=self.iterations, momentum=self.momentum)
        hop, half = self.spec.hop_length, self.spec.n_fft // 2
        return (self.gain * signal[(a - lo) * hop + half:(b - lo) * hop + half]).astype(np.float32)

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        if upstream is None:
            raise SynthesisError(f"{self.path}: GriffinLim needs an upstream block that makes mel frames")
        step = chunk_size(context, self.chunk_frames)
        for a, b, lo, window in windowed(upstream, "mel", step, self.context_frames):
            yield {"mel": window[a - lo:b - lo], "audio": self._samples(window, a, b, lo)}


def default_vocoder(addon: AddonSpec | Addon) -> GriffinLim:
    """A GriffinLim for ``addon``'s audio parameters, outside any stack (client-side vocoding of mel)."""
    spec = cast("AddonSpec", getattr(addon, "spec", addon))  # an Addon or its spec (no import: addon.py builds components)
    return GriffinLim(BuildContext(spec, UnboundRunner()), path="default-vocoder")
