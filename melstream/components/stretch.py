"""TimeStretch: honours a request's ``pace`` on frames that were made without it, streaming and exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.blocks import Checker, Contract, Shapes, StreamableBlock, Tensors, chunk_size
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


def pace_of(context: Mapping[str, np.ndarray]) -> float | None:
    """The request's ``pace`` (``None`` when absent or 1: the frames stay as they are)."""
    value = context.get("pace")
    if value is None:
        return None
    pace = float(value)
    if not (pace > 0 and math.isfinite(pace)):
        raise SynthesisError(f"pace must be a positive number, got {pace}")
    return None if pace == 1.0 else pace


def stretched_length(frames: int, pace: float) -> int:
    """How many frames ``frames`` input frames become at ``pace``: ``frames / pace`` rounded half up."""
    return int(math.floor(frames / pace + 0.5)) if frames > 0 else 0


def positions(start: int, stop: int, pace: float) -> np.ndarray:
    """Where output frames ``[start, stop)`` sample the input, in input frames (float64, >= 0).

    Output frame ``j`` covers input time ``[j * pace, (j + 1) * pace)``; its centre, ``(j + 0.5) * pace``,
    is input frame ``(j + 0.5) * pace - 0.5`` on the frames' own centres (clipped at the first frame)."""
    return np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * pace - 0.5, 0.0)


class Stretcher:
    """Linear interpolation in time of per-frame tensors by ``1 / pace``, fed chunk by chunk.

    Output frame ``j`` is ``(1 - f) * x[i] + f * x[i + 1]`` with ``i + f`` = :func:`positions` (``j``),
    clipped to the last input frame at the end; integer tensors (``frame_tokens``) take the nearer frame's value.
    A frame leaves as soon as input frame ``i + 1`` exists, so only a frame or two (``pace`` more when faster)
    of history is kept; the arithmetic is the same whether the input comes at once or frame by frame, so
    streaming never changes the answer.
    """

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.keys: tuple[str, ...] | None = None
        self.buf: dict[str, np.ndarray] = {}
        self.base = 0  # absolute index of the buffer's first frame
        self.have = 0  # input frames received
        self.made = 0  # output frames made

    def push(self, chunk: Mapping[str, np.ndarray], lead: str) -> Tensors:
        """Take an input chunk; return the output frames that are now exact (possibly none)."""
        n = len(chunk[lead])
        if self.keys is None:  # per-frame tensors: the ones as long as the frames (the rest cannot be stretched)
            self.keys = tuple(k for k, v in chunk.items() if np.ndim(v) >= 1 and len(v) == n)
            self.buf = {k: np.asarray(chunk[k])[:0] for k in self.keys}
        for k in self.keys:
            if k not in chunk or len(chunk[k]) != n:
                raise SynthesisError(f"TimeStretch: chunk tensor {k!r} is not per frame like {lead!r} in every chunk")
            self.buf[k] = np.concatenate([self.buf[k], chunk[k]], axis=0) if len(self.buf[k]) else np.asarray(chunk[k])
        self.have += n
        # ready: frame i + 1 exists, i = floor(position); never more than the frames `have` alone would make
        cap = stretched_length(self.have, self.pace)
        pos = positions(self.made, max(cap, self.made), self.pace)
        ready = int(np.count_nonzero(np.floor(pos) + 2 <= self.have))
        return self._make(pos[:ready], last=None)

    def finish(self) -> Tensors:
        """The input has ended: the remaining output frames (the last ones hold on to the last input frame)."""
        total = stretched_length(self.have, self.pace)
        return self._make(positions(self.made, max(total, self.made), self.pace), last=self.have - 1)

    def _make(self, pos: np.ndarray, last: int | None) -> Tensors:
        if self.keys is None:
            return {}
        if last is not None:
            pos = np.minimum(pos, last)
        lo = np.floor(pos).astype(np.int64)
        frac = pos - lo
        hi = lo + 1 if last is None else np.minimum(lo + 1, last)
        out: Tensors = {}
        for k in self.keys:
            x = self.buf[k]
            a, b = x[lo - self.base], x[hi - self.base]
            f = frac.reshape((-1,) + (1,) * (x.ndim - 1))
            if x.dtype.kind in "iub":  # indices (frame_tokens): the nearer input frame's, never a mix
                out[k] = np.where(f < 0.5, a, b)
            else:
                out[k] = ((1.0 - f) * a + f * b).astype(x.dtype)
        self.made += len(pos)
        # keep the history the next output frame can still need: from its lower input frame on
        if last is None and self.have:
            keep = min(int(math.floor(positions(self.made, self.made + 1, self.pace)[0])), self.have - 1)
            if keep > self.base:
                for k in self.keys:
                    self.buf[k] = self.buf[k][keep - self.base:]
                self.base = keep
        return out


def stretch(upstream: Iterator[Tensors], pace: float, step: int, lead: str = "mel") -> Iterator[Tensors]:
    """``upstream``'s per-frame tensors stretched by ``1 / pace`` (:class:`Stretcher`), in chunks of ``step``
    frames (the last may be shorter); tensors that are not per frame are dropped."""
    stretcher = Stretcher(pace)
    pending: list[Tensors] = []
    held = 0

    def take(count: int) -> Tensors:
        nonlocal pending, held
        merged = {k: np.concatenate([p[k] for p in pending], axis=0) for k in pending[0]}
        pending = [{k: v[count:] for k, v in merged.items()}] if count < held else []
        held -= count
        return {k: v[:count] for k, v in merged.items()}

    def add(frames: Tensors) -> Iterator[Tensors]:
        nonlocal held
        if frames and len(frames[lead]):
            pending.append(frames)
            held += len(frames[lead])
        while held >= step:
            yield take(step)

    for chunk in upstream:
        yield from add(stretcher.push(chunk, lead))
    yield from add(stretcher.finish())
    if held:
        yield take(held)


@register_component("TimeStretch")
class TimeStretch(StreamableBlock):
    """Upstream chunks in: ``mel`` ``[c, n_mels]`` and any other per-frame tensors (e.g. ``alignment``
    ``[c, N]``).  Context in: optional ``pace`` ``[]``.  Chunks out: the same tensors with ``T / pace``
    frames (rounded half up), by linear interpolation in time; tensors that are not per frame are dropped.

    Without ``pace``, or at 1, chunks pass through unchanged.  Otherwise chunks are ``chunk_frames``
    frames (or the request's ``chunk_frames``), and the concatenated chunks equal stretching the whole
    utterance at once, exactly (see :class:`Stretcher`).  For voices whose frames do not follow a
    duration per token (an attention decoder), this is how ``pace`` means the same on every voice.
    It must come before a vocoder: audio cannot be stretched this way.
    """

    contract = Contract(takes={"mel": ("T", "n_mels")}, emits={"mel": ("T", "n_mels")})

    def __init__(self, ctx: BuildContext | None = None, *, chunk_frames: int = 8, path: str = "") -> None:
        super().__init__(ctx, path=path)
        if chunk_frames < 1:
            raise StackError(f"{path}.chunk_frames: must be >= 1, got {chunk_frames}")
        self.chunk_frames = chunk_frames

    def params(self) -> dict[str, Any]:
        return {"chunk_frames": self.chunk_frames}

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        emits = super().check(context, upstream, sizes)
        assert upstream is not None  # the contract takes mel: the base check refused no upstream
        if "audio" in upstream:
            raise Checker(self, sizes).fail("must come before the vocoder: the chunks before it carry audio, "
                                            "which cannot be stretched frame by frame")
        frames = upstream["mel"][0]
        per_frame = {k: s for k, s in upstream.items() if s and s[0] == frames and isinstance(frames, str) and frames != "?"}
        return {**per_frame, **emits}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        if upstream is None:
            raise SynthesisError(f"{self.path}: TimeStretch needs an upstream block that makes mel frames")
        pace = pace_of(context)
        if pace is None:
            yield from upstream
            return
        yield from stretch(upstream, pace, chunk_size(context, self.chunk_frames))
