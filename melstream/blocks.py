"""The five integration abstractions of the seed, and the contract every component keeps.

Tensors travel between blocks as ``dict[str, numpy.ndarray]`` ("tensor maps"), without a batch
dimension; networks add and remove their own batch dimension of 1.

* A :class:`SequenceBlock` is called once with the utterance's tensors and returns new tensors.
* A :class:`StreamableBlock` is a *pull* generator: ``generate(context, upstream)`` returns an iterator
  of chunks; nothing is computed until the consumer asks for the next chunk, and stopping the pull
  (closing the iterator) stops the work.

Tensor names used by the built-in components (``T`` frames, ``N`` tokens, ``D`` channels):

================  ===============  ==========================================
name              shape / dtype    meaning
================  ===============  ==========================================
``tokens``        [N] int64        symbol ids from the addon's text front end
``pace``          [] float32       speaking-rate factor (>1 faster), optional
``chunk_frames``  [] int64         per-request chunk size (0 = whole), optional
``encodings``     [N, D] float32   text encodings (duration-based voices)
``durations``     [N] float32      predicted frames per token
``memory``        [N, D] float32   attention memory (attention voices)
``upsampled``     [T, D] float32   encodings repeated per frame (chunk)
``mel``           [T, n_mels] f32  log-mel frames (chunk)
``alignment``     [T, N] float32   attention weights per frame (chunk)
================  ===============  ==========================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from melstream.errors import StackError

if TYPE_CHECKING:
    from melstream.stack import BuildContext

Tensors = dict[str, np.ndarray]


class Block:
    """Common base: a registered type name, the JSON path it was built from, and a tree view."""

    type_name: ClassVar[str] = ""
    #: child slots filled by the stack builder: name -> ("sequence" | "streamable", is_list)
    child_slots: ClassVar[dict[str, tuple[str, bool]]] = {}
    #: child slots that a stack may leave out (the block then gets ``None``)
    optional_slots: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: BuildContext | None = None, *, path: str = "") -> None:
        self.path = path

    def children(self) -> list[Block]:
        return []

    def params(self) -> dict[str, Any]:
        """Parameters shown by :meth:`describe` (subclasses add theirs)."""
        return {}

    def describe(self, indent: int = 0) -> str:
        """The block tree as indented text, one line per block."""
        kind = "SequenceBlock" if isinstance(self, SequenceBlock) else "StreamableBlock"
        name = self.type_name or type(self).__name__
        params = ", ".join(f"{k}={v}" for k, v in self.params().items())
        line = "  " * indent + f"{name} ({kind}{', ' + params if params else ''})"
        return "\n".join([line] + [c.describe(indent + 1) for c in self.children()])


class SequenceBlock(Block):
    """Takes the utterance's tensors and returns new tensors, all at once (e.g. an encoder).

    Contract: ``block(inputs) -> outputs``; ``inputs`` is read-only, ``outputs`` holds only the
    tensors this block produces.  ``requires``/``provides`` name them so containers can order,
    parallelise and validate blocks.
    """

    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        raise NotImplementedError


class StreamableBlock(Block):
    """Produces chunks on demand: ``generate(context, upstream)`` is a lazy iterator of tensor maps.

    ``context`` holds the utterance's tensors (text tokens and every SequenceBlock's outputs);
    ``upstream`` is the previous StreamableBlock's chunk iterator (``None`` for the first block of
    a stack).  Implementations must be generators (or return lazy iterators) so that nothing runs
    before the first ``next()``.
    """

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        raise NotImplementedError


class SequenceBlockContainer(SequenceBlock):
    """A SequenceBlock made of nested SequenceBlocks, run in order.

    Each child sees the container's inputs plus every earlier child's outputs; the container
    returns the union of its children's outputs.
    """

    child_slots = {"stack": ("sequence", True)}

    def __init__(self, ctx: BuildContext | None = None, *, stack: list[SequenceBlock], path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.stack = list(stack)
        self.provides = tuple(name for b in self.stack for name in b.provides)
        requires: list[str] = []
        produced: set[str] = set()
        for b in self.stack:  # what the container needs from outside: inputs no earlier child produces
            requires += [r for r in b.requires if r not in produced and r not in requires]
            produced.update(b.provides)
        self.requires = tuple(requires)

    def children(self) -> list[Block]:
        return list(self.stack)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        env = dict(inputs)
        out: Tensors = {}
        for block in self.stack:
            produced = block(env)
            env.update(produced)
            out.update(produced)
        return out


class StreamableStack(StreamableBlock):
    """A StreamableBlock made of a chain of StreamableBlocks (e.g. Upsampler → Decoder).

    Block ``i+1`` pulls from block ``i``; the stack's chunks are the last block's chunks.
    """

    child_slots = {"stack": ("streamable", True)}

    def __init__(self, ctx: BuildContext | None = None, *, stack: list[StreamableBlock], path: str = "") -> None:
        super().__init__(ctx, path=path)
        if not stack:
            raise StackError(f"{path}.stack: a StreamableStack needs at least one block")
        self.stack = list(stack)

    def children(self) -> list[Block]:
        return list(self.stack)

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        it = upstream
        for block in self.stack:
            it = block.generate(context, it)
        assert it is not None
        return it


class StreamablePipeline(StreamableBlock):
    """A StreamableBlock holding exactly one SequenceBlock and one StreamableBlock.

    ``generate`` runs the SequenceBlock on the context once, at the first pull, then streams the
    StreamableBlock over the enlarged context.  The root pipeline of an addon also carries the
    addon's text front end, so ``stream(text)`` yields output frames (``mel`` chunks, ``[T, n_mels]``).
    """

    child_slots = {"sequence_block": ("sequence", False), "streamable_block": ("streamable", False)}

    def __init__(self, ctx: BuildContext | None = None, *, sequence_block: SequenceBlock,
                 streamable_block: StreamableBlock, path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.sequence_block = sequence_block
        self.streamable_block = streamable_block
        self.frontend: Any = ctx.frontend if ctx is not None else None
        self.n_mels = ctx.addon.audio.n_mels if ctx is not None else 80
        self.output = "mel"

    def children(self) -> list[Block]:
        return [self.sequence_block, self.streamable_block]

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        env = dict(context)
        env.update(self.sequence_block(env))
        yield from self.streamable_block.generate(env, upstream)

    def inputs_for(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> Tensors:
        """The root context for ``text``: token ids from the front end plus per-request options."""
        if self.frontend is None:
            raise StackError(f"{self.path}: this pipeline has no text front end (only an addon's root pipeline has one)")
        env: Tensors = {"tokens": self.frontend.encode(text)}
        if pace is not None:
            env["pace"] = np.asarray(pace, dtype=np.float32)
        if chunk_frames is not None:
            env["chunk_frames"] = np.asarray(chunk_frames, dtype=np.int64)
        return env

    @property
    def produces_audio(self) -> bool:
        """True if the stack ends in a vocoder: chunks then carry ``audio`` as well as ``mel``."""
        return any(getattr(b, "makes_audio", False) for b in walk(self))

    def stream_outputs(self, text: str | bytes, *, pace: float | None = None,
                       chunk_frames: int | None = None) -> Iterator[Tensors]:
        """Yield the output tensors of each non-empty chunk: ``mel`` ``[T_i, n_mels]`` and, if the
        stack ends in a vocoder, ``audio`` ``[T_i * hop]`` (lazily)."""
        keys = ("mel", "audio") if self.produces_audio else ("mel",)
        for chunk in self.generate(self.inputs_for(text, pace=pace, chunk_frames=chunk_frames)):
            if len(chunk[self.output]):
                yield {k: chunk[k] for k in keys}

    def stream(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> Iterator[np.ndarray]:
        """Yield ``[T_i, n_mels]`` float32 chunks for ``text`` as they are produced (lazily)."""
        for chunk in self.stream_outputs(text, pace=pace, chunk_frames=chunk_frames):
            yield chunk[self.output]

    def synthesize(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> np.ndarray:
        """The whole utterance, ``[T, n_mels]``: the concatenation of :meth:`stream`."""
        chunks = list(self.stream(text, pace=pace, chunk_frames=chunk_frames))
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, self.n_mels), np.float32)


def chunk_size(context: Mapping[str, np.ndarray], default: int) -> int:
    """The chunk size for this request: the ``chunk_frames`` override if given and > 0, else ``default``."""
    value = context.get("chunk_frames")
    if value is not None and int(value) > 0:
        return int(value)
    if value is not None and int(value) == 0:
        return 1 << 40  # 0 asks for the whole utterance in one chunk (the naive call)
    return default


def walk(block: Block) -> Iterator[Block]:
    """``block`` and every block below it, depth first."""
    yield block
    for child in block.children():
        yield from walk(child)
