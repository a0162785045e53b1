"""Incremental, exact encoding of long texts: the first frames never wait for the whole text.

Convolutional encoders see only ``context_tokens`` tokens on each side (their receptive
half-width, declared on each encoder network).  Encoding tokens ``[a, b)`` from the window
``[a - c, b + c)`` (clipped to the text) therefore gives exactly the values a whole-text encoding
gives for those tokens, so a long text can be encoded segment by segment, on demand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from melstream.blocks import SequenceBlock, Shapes, StreamableBlock, Tensors, TokenStream
from melstream.errors import StackError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


def declared_context(ctx: BuildContext, block: SequenceBlock, path: str) -> int:
    """The largest ``context_tokens`` declared by the networks under ``block`` (error if one lacks it)."""
    from melstream.components.encoders import NetworkBlock

    def networks(b: Any) -> list[NetworkBlock]:
        if isinstance(b, NetworkBlock):
            return [b]
        return [n for c in b.children() for n in networks(c)]

    found = networks(block)
    if not found:
        raise StackError(f"{path}: its sequence block runs no network, so there is nothing to encode incrementally")
    widths = []
    for n in found:
        width = n.network.spec.options.get("context_tokens")
        if not isinstance(width, int) or width < 0:
            raise StackError(f'{path}: network "{n.name}" declares no "context_tokens" (its receptive half-width in '
                             "tokens); incremental encoding needs it to stay exact")
        widths.append(width)
    return max(widths)


def encode_span(block: SequenceBlock, context: Mapping[str, np.ndarray], a: int, b: int, margin: int) -> Tensors:
    """``block``'s outputs for tokens ``[a, b)``, computed from the window ``[a - margin, b + margin)``.

    Per-token inputs and outputs are those whose first axis has the text's length.
    """
    n = len(context["tokens"])
    lo, hi = max(a - margin, 0), min(b + margin, n)
    window = {k: (v[lo:hi] if v.ndim and len(v) == n else v) for k, v in context.items()}
    out = block(window)
    return {k: (v[a - lo:b - lo] if v.ndim and len(v) == hi - lo else v) for k, v in out.items()}


def segment_bounds(n: int, first: int, size: int) -> list[tuple[int, int]]:
    """Token spans: a short first segment (fast first frames), then ``size``-token segments."""
    bounds, a, step = [], 0, first
    while a < n:
        bounds.append((a, min(a + step, n)))
        a, step = a + step, size
    return bounds


@register_component("SegmentedPipeline")
class SegmentedPipeline(StreamableBlock):
    """A StreamablePipeline that runs its SequenceBlock segment by segment instead of once.

    Context in: ``tokens`` ``[N]``.  For each token segment (``first_segment_tokens``, then
    ``segment_tokens`` each) it encodes the segment exactly (see module doc) and streams its
    StreamableBlock over that segment's encodings; the chunks of all segments follow each other.
    Use it for blocks whose output per segment is independent (e.g. an Upsampler), and put
    blocks with memory across the text (a Decoder) after it: the frames are then identical to a
    whole-text run, while time to the first frame no longer grows with the text's length.

    ``tokens`` may be a :class:`melstream.blocks.TokenStream` (the root pipeline's sentence-by-sentence text):
    each segment then reads the text only as far as its window, ``b + context_tokens``, so the front end is
    a segment ahead of the frames, never the whole text; the segments, and so the frames, are the same.

    Chunks that carry ``frame_tokens`` (each frame's token, counted in the segment) leave with it counted in
    the whole text (the segment's first token added).
    """

    lazy_tokens = True

    child_slots: ClassVar[dict[str, tuple[str, bool]]] = {"sequence_block": ("sequence", False), "streamable_block": ("streamable", False)}

    def __init__(self, ctx: BuildContext, *, sequence_block: SequenceBlock, streamable_block: StreamableBlock,
                 first_segment_tokens: int = 16, segment_tokens: int = 96, path: str = "") -> None:
        super().__init__(ctx, path=path)
        if first_segment_tokens < 1 or segment_tokens < 1:
            raise StackError(f"{path}: segment sizes must be >= 1, got {first_segment_tokens}, {segment_tokens}")
        self.sequence_block = sequence_block
        self.streamable_block = streamable_block
        self.first_segment_tokens = first_segment_tokens
        self.segment_tokens = segment_tokens
        self.margin = declared_context(ctx, sequence_block, f"{path}.sequence_block")

    def children(self) -> list[Any]:
        return [self.sequence_block, self.streamable_block]

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        # like a StreamablePipeline, except that the streamable block starts anew on each segment, with no upstream
        return self.streamable_block.check({**context, **self.sequence_block.check(context, sizes)}, None, sizes)

    def params(self) -> dict[str, Any]:
        return {"first_segment_tokens": self.first_segment_tokens, "segment_tokens": self.segment_tokens,
                "context_tokens": self.margin}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        tokens: Any = context["tokens"]
        if isinstance(tokens, TokenStream):
            yield from self._generate_lazy(context, tokens)
            return
        n = len(tokens)
        for a, b in segment_bounds(n, self.first_segment_tokens, self.segment_tokens):
            encoded = encode_span(self.sequence_block, context, a, b, self.margin)
            yield from _offset(self.streamable_block.generate({**context, **encoded}, None), a)

    def _generate_lazy(self, context: Mapping[str, np.ndarray], tokens: TokenStream) -> Iterator[Tensors]:
        """:meth:`generate` over a text read as it goes: segment ``[a, b)`` is encoded once the text is known up
        to ``b + margin`` (or to its end), which is all of its window that a whole-text run would use."""
        a, step = 0, self.first_segment_tokens
        while True:
            known = tokens.ensure(a + step + self.margin)
            if a >= known:  # only when the whole text is known (ensure stops short only at its end)
                return
            b = min(a + step, known)
            window = {**context, "tokens": tokens.known}
            encoded = encode_span(self.sequence_block, window, a, b, self.margin)
            yield from _offset(self.streamable_block.generate({**window, **encoded}, None), a)
            a, step = b, self.segment_tokens


def _offset(chunks: Iterator[Tensors], first: int) -> Iterator[Tensors]:
    """``chunks`` of a segment that starts at token ``first``, their ``frame_tokens`` (if any) made absolute."""
    for chunk in chunks:
        if first and "frame_tokens" in chunk:
            chunk = {**chunk, "frame_tokens": chunk["frame_tokens"] + first}
        yield chunk
