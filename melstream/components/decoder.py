"""Decoder: turns upsampled encodings into mel frames, chunk by chunk, exactly as a whole decode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.blocks import Contract, Shapes, StreamableBlock, Tensors, chunk_size, network_shape, show
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


@register_component("Decoder")
class Decoder(StreamableBlock):
    """Upstream chunks in: ``upsampled`` ``[c, D]``.  Chunks out: ``mel`` ``[c', n_mels]``, and ``frame_tokens``
    ``[c']`` (each frame's token) when the upstream chunks carry it (an Upsampler's do).

    The decoder network is convolutional with a receptive half-width of ``context_frames`` frames
    (declared on the network in addon.json).  To emit frames ``[a, b)`` the block runs the network
    on ``[a - r, b + r)`` (clipped to the utterance) and keeps the middle, so every emitted frame
    sees exactly the inputs it sees in a whole-utterance decode: streaming never changes the answer.
    It pulls upstream only until it holds ``b + r`` frames, and keeps only ``r`` frames of history.

    ``max_chunk_frames`` (optional) makes chunks grow: ``chunk_frames`` first, then doubling up to
    ``max_chunk_frames``.  The first audio comes as soon as before, and later chunks pay the ``2r``
    frames of context and the per-call cost less often, while the audio already sent covers the
    longer compute of each bigger chunk.  A request's ``chunk_frames`` override keeps chunks fixed.
    """

    def __init__(self, ctx: BuildContext, *, network: str = "decoder", chunk_frames: int = 32,
                 max_chunk_frames: int | None = None, context_frames: int | None = None, path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.network = ctx.network(network, path)
        declared = self.network.spec.options.get("context_frames")
        self.context_frames = int(context_frames if context_frames is not None else declared if declared is not None else -1)
        if self.context_frames < 0:
            raise StackError(f'{path}: network "{network}" declares no "context_frames" (its receptive half-width); '
                             'set it in addon.json or on the block')
        if chunk_frames < 1:
            raise StackError(f"{path}.chunk_frames: must be >= 1, got {chunk_frames}")
        if max_chunk_frames is not None and max_chunk_frames < chunk_frames:
            raise StackError(f"{path}.max_chunk_frames: must be >= chunk_frames ({chunk_frames}), got {max_chunk_frames}")
        self.chunk_frames = chunk_frames
        self.max_chunk_frames = max_chunk_frames
        spec = self.network.spec
        # a fixed-shape profile runs each window in the smallest bucket that holds it: the largest chunk with
        # its context on both sides must fit the largest bucket (longer inputs are split: whole utterances)
        window = (max_chunk_frames or chunk_frames) + 2 * self.context_frames
        if spec.buckets and window > spec.buckets[-1]:
            raise StackError(f'{path}: a chunk of {max_chunk_frames or chunk_frames} frames with its context '
                             f'({self.context_frames} on each side) is a window of {window} frames, but network '
                             f'"{network}" is compiled for at most {spec.buckets[-1]} (its buckets: '
                             f'{", ".join(map(str, spec.buckets))})')
        self.in_name = spec.inputs[0].name
        self.out_name = spec.outputs[0].name
        # frames in [T, D] from upstream, out [T, n_mels]: the network's own widths must be those
        frames_in, frames_out = network_shape(spec.inputs[0].shape), network_shape(spec.outputs[0].shape)
        if len(frames_in) != 2 or len(frames_out) != 2:
            raise StackError(f'{path}: network "{network}" must map frames [T, D] to [T, n_mels], it maps '
                             f"{show(frames_in)} to {show(frames_out)}")
        n_mels = ctx.addon.audio.n_mels
        if frames_out[1] not in (n_mels, "?"):
            raise StackError(f'{path}: network "{network}" makes frames of {frames_out[1]} mel bins, but the addon\'s '
                             f"audio.n_mels is {n_mels}")
        self.contract = Contract(takes={"upsampled": ("T", frames_in[1])}, emits={"mel": ("T", "n_mels")})

    def params(self) -> dict[str, Any]:
        return {"network": self.network.spec.name, "chunk_frames": self.chunk_frames, "max_chunk_frames": self.max_chunk_frames,
                "context_frames": self.context_frames}

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        emits = super().check(context, upstream, sizes)
        if upstream is not None and "frame_tokens" in upstream:  # passed on, frame for frame
            emits["frame_tokens"] = (emits["mel"][0],)
        return emits

    def decode(self, frames: np.ndarray) -> np.ndarray:
        """Whole-utterance decode: ``[T, D]`` → ``[T, n_mels]`` in one network call."""
        return self.network({self.in_name: frames[None]})[self.out_name][0]

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        if upstream is None:
            raise SynthesisError(f"{self.path}: Decoder needs an upstream block (e.g. an Upsampler before it)")
        step = chunk_size(context, self.chunk_frames)
        # a request's own chunk size (or 0 = whole) is kept as asked; only the default schedule grows
        max_step = self.max_chunk_frames if context.get("chunk_frames") is None else None
        tokens = _FrameTokens(upstream)
        for a, b, lo, window in windowed(tokens, "upsampled", step, self.context_frames, max_step=max_step):
            chunk = {"mel": self.decode(window)[a - lo:b - lo]}
            if tokens.seen:
                chunk["frame_tokens"] = tokens.take(a, b)
            yield chunk


class _FrameTokens:
    """An upstream chunk iterator that keeps each chunk's ``frame_tokens`` (when it has them) until
    :meth:`take` hands out frames ``[a, b)`` (frames are taken in order, so only what is not taken is kept)."""

    def __init__(self, upstream: Iterator[Tensors]) -> None:
        self.upstream = upstream
        self.seen = False
        self.parts: list[np.ndarray] = []
        self.base = 0  # absolute index of the first frame kept

    def __iter__(self) -> _FrameTokens:
        return self

    def __next__(self) -> Tensors:
        chunk = next(self.upstream)
        if "frame_tokens" in chunk:
            self.seen = True
            self.parts.append(np.asarray(chunk["frame_tokens"], np.int64))
        return chunk

    def take(self, a: int, b: int) -> np.ndarray:
        kept = np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]
        out = kept[a - self.base:b - self.base]
        self.parts, self.base = [kept[b - self.base:]], b
        return out


def windowed(upstream: Iterator[Tensors], key: str, step: int, r: int, *,
             max_step: int | None = None) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Re-chunk ``upstream[key]`` frames into ``(a, b, lo, window)``: emit frames ``[a, b)`` (``step``
    at a time, doubling after each chunk up to ``max_step`` if given) from ``window`` = frames
    ``[lo, min(b + r, T))`` with ``lo = max(a - r, 0)``.

    A block whose output frame depends on at most ``r`` input frames on each side computes frames
    ``[a, b)`` exactly from the window.  Upstream is pulled only until ``b + r`` frames are held, and
    only ``r`` frames of history are kept.
    """
    parts: list[np.ndarray] = []
    buf: np.ndarray | None = None
    buf_start = 0  # absolute index of buf[0]
    have = 0  # frames received so far
    emitted = 0
    done = False
    while True:
        while not done and have < emitted + step + r:
            try:
                x = next(upstream)[key]
            except StopIteration:
                done = True
                break
            parts.append(x)
            have += len(x)
        if parts:
            buf = np.concatenate(([buf] if buf is not None else []) + parts, axis=0)
            parts = []
        end = min(emitted + step, have if done else have - r)
        if end <= emitted:
            return
        assert buf is not None
        lo = max(emitted - r, 0)
        hi = min(end + r, have)
        yield emitted, end, lo, buf[lo - buf_start:hi - buf_start]
        emitted = end
        if max_step is not None:
            step = max(step, min(2 * step, max_step))
        keep = max(emitted - r, 0)  # drop history the next window no longer needs
        buf, buf_start = buf[keep - buf_start:], keep
