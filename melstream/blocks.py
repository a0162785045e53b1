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

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from melstream.errors import InputError, StackError
from melstream_client import wire

if TYPE_CHECKING:
    from melstream.runners.base import Network, Runner
    from melstream.text import Sentence, TextPiece
    from melstream_client.spec import AddonSpec, NetworkSpec

Tensors = dict[str, np.ndarray]

#: A tensor's axes without the batch: an int is a fixed size; a name (``"N"`` tokens, ``"T"`` frames,
#: ``"D"`` channels, ``"n_mels"`` the addon's mel bins) is a size that must agree wherever the same name
#: appears in one block's contract; ``"?"`` is any size.
Shape = tuple[str | int, ...]
Shapes = dict[str, Shape]

#: what the root pipeline puts in the context before any block runs (see ``inputs_for``)
ROOT_CONTEXT: Shapes = {"tokens": ("N",), "pace": (), "chunk_frames": ()}


@dataclass(frozen=True)
class Contract:
    """The tensors a block consumes and emits, checked when the stack is built.

    ``reads``: context tensors it needs (a SequenceBlock's inputs).  ``takes``: tensors it needs in
    its upstream chunks (StreamableBlocks only).  ``emits``: a SequenceBlock's outputs (added to
    the context) or a StreamableBlock's chunk tensors.  ``keeps_upstream``: its chunks also carry
    every upstream chunk tensor it does not replace (per-frame effects).
    """

    reads: Mapping[str, Shape] = field(default_factory=dict)
    takes: Mapping[str, Shape] = field(default_factory=dict)
    emits: Mapping[str, Shape] = field(default_factory=dict)
    keeps_upstream: bool = False


def network_shape(shape: tuple[int, ...]) -> Shape:
    """An addon's declared network tensor shape as a contract shape (``-1`` is any size)."""
    return tuple("?" if d == -1 else d for d in shape)


def show(shape: Shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


class Checker:
    """Matches one block's declared shapes against what the stack gives it, binding named axes.

    ``sizes`` holds the addon-wide names (``n_mels``); every other name is bound by its first use
    within the block and must agree after that.
    """

    def __init__(self, block: Block, sizes: Mapping[str, int]) -> None:
        self.block = block
        self.bound: dict[str, str | int] = dict(sizes)

    def fail(self, msg: str) -> StackError:
        return StackError(f"{self.block.path}: {self.block.type_name or type(self.block).__name__} {msg}")

    def match(self, name: str, declared: Shape, actual: Shape, where: str) -> None:
        if len(declared) != len(actual):
            raise self.fail(f'needs {where} "{name}" {show(declared)}, which is {show(actual)} (rank {len(actual)}, not {len(declared)})')
        for axis, (d, a) in enumerate(zip(declared, actual, strict=True)):
            want = self.bound.get(d, d) if isinstance(d, str) else d
            if isinstance(want, int) and isinstance(a, int) and want != a:
                named = f" ({d} = {want})" if isinstance(d, str) else ""
                raise self.fail(f'needs {where} "{name}" {show(declared)}{named}, which is {show(actual)}: axis {axis} is {a}, not {want}')
            if isinstance(d, str) and d != "?" and (d not in self.bound or isinstance(a, int)):
                self.bound[d] = a

    def need(self, wanted: Mapping[str, Shape], have: Mapping[str, Shape], where: str, source: str) -> None:
        for name, declared in wanted.items():
            if name not in have:
                raise self.fail(f'needs {where} "{name}" {show(declared)}, but {source} only: {", ".join(sorted(have)) or "nothing"}')
            self.match(name, declared, have[name], where)

    def resolve(self, shapes: Mapping[str, Shape]) -> Shapes:
        return {n: tuple(self.bound.get(d, d) if isinstance(d, str) else d for d in s) for n, s in shapes.items()}


@dataclass
class BuildContext:
    """What components may use while they are built: the addon's spec, its networks on a runner, the front end."""

    addon: AddonSpec
    runner: Runner
    frontend: Any = None
    _bound: dict[str, Network] = field(default_factory=dict)

    def network_spec(self, name: str, path: str) -> NetworkSpec:
        try:
            return self.addon.networks[name]
        except KeyError:
            raise StackError(f'{path}: needs network "{name}", but the addon declares only: '
                             f'{", ".join(self.addon.networks)}') from None

    def network(self, name: str, path: str) -> Network:
        """The handle of network ``name`` on this context's runner (bound once, shared by blocks)."""
        spec = self.network_spec(name, path)
        if name not in self._bound:
            self._bound[name] = self.runner.bind(self.addon, spec)
        return self._bound[name]

    def networks_with_role(self, role: str) -> list[str]:
        return [n for n, s in self.addon.networks.items() if s.role == role]


class Block:
    """Common base: a registered type name, the JSON path it was built from, its contract, and a tree view."""

    type_name: ClassVar[str] = ""
    #: child slots filled by the stack builder: name -> ("sequence" | "streamable", is_list)
    child_slots: ClassVar[dict[str, tuple[str, bool]]] = {}
    #: child slots that a stack may leave out (the block then gets ``None``)
    optional_slots: ClassVar[frozenset[str]] = frozenset()
    #: the tensors this block consumes and emits: every block that does not override ``check`` declares
    #: it (on the class, or in ``__init__`` when its tensors depend on its networks or parameters)
    contract: Contract | None = None

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

    def declared(self) -> Contract:
        """This block's contract; a block that declares none cannot be wired into a checked stack."""
        if self.contract is None:
            name = self.type_name or type(self).__name__
            raise StackError(f'{self.path}: {name} declares no contract (the tensors it consumes and emits): '
                             f"set `contract = Contract(...)` on {type(self).__qualname__}")
        return self.contract


class SequenceBlock(Block):
    """Takes the utterance's tensors and returns new tensors, all at once (e.g. an encoder).

    Contract: ``block(inputs) -> outputs``; ``inputs`` is read-only, ``outputs`` holds only the
    tensors this block produces: ``contract.reads`` and ``contract.emits`` name them (with their
    shapes), so containers can order, parallelise and validate blocks.
    """

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(self.declared().reads)

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(self.declared().emits)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        raise NotImplementedError

    def check(self, context: Shapes, sizes: Mapping[str, int]) -> Shapes:
        """The shapes of this block's outputs, given the shapes in the ``context``; a StackError naming
        this block's path and the missing or mis-shaped tensor if the context cannot feed it."""
        contract, c = self.declared(), Checker(self, sizes)
        c.need(contract.reads, context, "context tensor", "the context holds")
        return c.resolve(contract.emits)


class StreamableBlock(Block):
    """Produces chunks on demand: ``generate(context, upstream)`` is a lazy iterator of tensor maps.

    ``context`` holds the utterance's tensors (text tokens and every SequenceBlock's outputs);
    ``upstream`` is the previous StreamableBlock's chunk iterator (``None`` for the first block of
    a stack).  Implementations must be generators (or return lazy iterators) so that nothing runs
    before the first ``next()``.
    """

    #: True if ``generate`` accepts a :class:`TokenStream` as the context's ``tokens`` and reads only as many
    #: tokens as it needs (a block that reads the text's tokens in order, e.g. segment by segment)
    lazy_tokens: ClassVar[bool] = False

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        raise NotImplementedError

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        """The shapes of this block's chunk tensors, given the ``context``'s and the ``upstream`` chunks'
        (``None``: no block before it); a StackError naming this block's path and the tensor if not."""
        contract, c = self.declared(), Checker(self, sizes)
        c.need(contract.reads, context, "context tensor", "the context holds")
        if contract.takes:
            if upstream is None:
                first = next(iter(contract.takes))
                raise c.fail(f'needs upstream chunks with "{first}", but no block comes before it')
            c.need(contract.takes, upstream, "upstream chunk tensor", "the chunks before it carry")
        emits = c.resolve(contract.emits)
        return {**upstream, **emits} if contract.keeps_upstream and upstream is not None else emits


class SequenceBlockContainer(SequenceBlock):
    """A SequenceBlock made of nested SequenceBlocks, run in order.

    Each child sees the container's inputs plus every earlier child's outputs; the container
    returns the union of its children's outputs.
    """

    child_slots = {"stack": ("sequence", True)}

    def __init__(self, ctx: BuildContext | None = None, *, stack: list[SequenceBlock], path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.stack = list(stack)
        reads: Shapes = {}
        emits: Shapes = {}
        for b in self.stack:  # what the container needs from outside: inputs no earlier child produces
            reads.update({n: s for n, s in b.declared().reads.items() if n not in emits and n not in reads})
            emits.update(b.declared().emits)
        self.contract = Contract(reads=reads, emits=emits)

    def children(self) -> list[Block]:
        return list(self.stack)

    def check(self, context: Shapes, sizes: Mapping[str, int]) -> Shapes:
        env, out = dict(context), {}
        for block in self.stack:
            produced = block.check(env, sizes)
            env.update(produced)
            out.update(produced)
        return out

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

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        chunks = upstream
        for block in self.stack:
            chunks = block.check(context, chunks, sizes)
        assert chunks is not None  # a StreamableStack holds at least one block
        return chunks

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        it = upstream
        for block in self.stack:
            it = block.generate(context, it)
        assert it is not None
        return it


class TokenStream:
    """A text's ``tokens`` ``[N]`` int64, made a sentence at a time as the blocks ask for them.

    The root pipeline puts one in the context as ``tokens`` when every block that reads the tokens can
    start on a prefix of them (:attr:`StreamableBlock.lazy_tokens`): the front end then reads only as many
    sentences ahead as the first segments need (:meth:`ensure`), and the first frame does not wait for the
    rest of the text.  The tokens are the front end's ``sentences``' ids, then ``end_id``: its ``encode`` of
    the text, so the blocks see the same tokens either way.  :attr:`sentences` holds the sentences read so
    far and :meth:`words` each word's token range in the whole text (the hook for word timestamps).
    """

    def __init__(self, sentences: Iterable[Sentence], end_id: int) -> None:
        self._source: Iterator[Sentence] | None = iter(sentences)
        self._end = np.asarray([end_id], dtype=np.int64)
        self._known = np.zeros(0, np.int64)
        self.sentences: list[Sentence] = []
        self.starts: list[int] = []  # where each sentence's ids start in the tokens

    def __repr__(self) -> str:
        return f"TokenStream({len(self._known)} tokens of {len(self.sentences)} sentences{', complete' if self.complete else ''})"

    @property
    def complete(self) -> bool:
        """Whether the whole text has been read (:attr:`known` then holds every token, the end id last)."""
        return self._source is None

    @property
    def known(self) -> np.ndarray:
        """The tokens made so far, ``[n]`` int64 (all ``N`` once :attr:`complete`)."""
        return self._known

    def ensure(self, count: int) -> int:
        """Read sentences until at least ``count`` tokens are known or the text has ended; how many are known.
        The front end's errors for the text (e.g. no known phonemes in it) surface here."""
        if self._source is None or len(self._known) >= count:
            return len(self._known)
        parts = [self._known]
        known = len(self._known)
        while known < count:
            sentence = next(self._source, None)
            if sentence is None:
                self._source = None
                parts.append(self._end)
                known += 1
                break
            self.starts.append(known)
            self.sentences.append(sentence)
            parts.append(np.asarray(sentence.ids, dtype=np.int64))
            known += len(sentence.ids)
        self._known = np.concatenate(parts)
        return known

    def all(self) -> np.ndarray:
        """Every token, ``[N]`` (reads the rest of the text)."""
        while not self.complete:
            self.ensure(2 * len(self._known) + 1)
        return self._known

    def words(self) -> list[tuple[str, int, int]]:
        """``(text, start, end)`` of every word read so far; ``start``, ``end``: token positions in the whole text."""
        return [(w.text, at + w.start, at + w.end)
                for at, sentence in zip(self.starts, self.sentences, strict=True) for w in sentence.words]


def _lazy_ok(block: StreamableBlock) -> bool:
    """Whether ``block``, the first to get the context, can take a :class:`TokenStream` as its ``tokens``."""
    if isinstance(block, StreamableStack):  # the others get the same context: none of them may read the tokens
        later = any(b.contract is not None and "tokens" in b.contract.reads for b in block.stack[1:])
        return _lazy_ok(block.stack[0]) and not later
    return bool(getattr(block, "lazy_tokens", False))


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
        #: seconds per frame (``hop_length / sample_rate``): word timestamps count frames in it
        self.frame_s = ctx.addon.audio.hop_length / ctx.addon.audio.sample_rate if ctx is not None else 256 / 22050
        self.output = "mel"
        #: the root pipeline's chunk tensors and their shapes, as checked at build (see :meth:`check_root`)
        self.chunk_shapes: Shapes = {}

    def children(self) -> list[Block]:
        return [self.sequence_block, self.streamable_block]

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        env = {**context, **self.sequence_block.check(context, sizes)}
        return self.streamable_block.check(env, upstream, sizes)

    def check_root(self) -> Shapes:
        """Check the whole tree as an addon's root: from the text's ``tokens`` to chunks that carry
        ``mel`` ``[T, n_mels]``.  Returns (and keeps) the chunks' shapes; a StackError names the
        block and the tensor that does not fit."""
        sizes = {"n_mels": self.n_mels}
        chunks = self.check(dict(ROOT_CONTEXT), None, sizes)
        c = Checker(self, sizes)
        c.need({self.output: ("T", "n_mels")}, chunks, "its chunks to carry", "the stack's last block emits")
        self.chunk_shapes = chunks
        return chunks

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        env = dict(context)
        tokens: Any = env.get("tokens")
        if isinstance(tokens, TokenStream) and not self.reads_text_lazily:
            env["tokens"] = tokens.all()  # a block below needs the whole text at once
        env.update(self.sequence_block(env))
        yield from self.streamable_block.generate(env, upstream)

    def inputs_for(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> Tensors:
        """The root context for ``text``: token ids from the front end plus per-request options.

        ``pace`` outside :data:`melstream.wire.PACE_RANGE` (NaN and infinities included) and ``chunk_frames``
        outside :data:`melstream.wire.CHUNK_FRAMES_RANGE` are refused with an :class:`InputError` naming the
        input, as a voice model refuses them on the wire."""
        self._check_options(pace, chunk_frames)
        return self._context(self.frontend.encode(text), pace=pace, chunk_frames=chunk_frames)

    def lazy_inputs_for(self, text: str | bytes | Iterable[TextPiece], *, pace: float | None = None,
                        chunk_frames: int | None = None) -> dict[str, Any]:
        """:meth:`inputs_for`, except that ``tokens`` is a :class:`TokenStream` over the front end's sentences,
        so the text is phonemised only as far as the blocks ask.  The options, and the text (decoded, checked,
        normalised: :class:`melstream.errors.TextError`), are checked here, before anything is spoken; a front
        end without ``sentences`` gives :meth:`inputs_for`.  ``text`` may also come in pieces (an iterable of
        :class:`melstream.text.TextPiece`, blocking until each comes: a text stream): its sentences are then
        read as each is complete (:func:`melstream.text.sentences_from`), and this waits for the first."""
        from melstream.text import sentences_from

        self._check_options(pace, chunk_frames)
        if not isinstance(text, (str, bytes)):
            if not hasattr(self.frontend, "sentences"):
                return self.inputs_for(_joined(text), pace=pace, chunk_frames=chunk_frames)
            sentences = sentences_from(self.frontend, text)
        elif not hasattr(self.frontend, "sentences"):
            return self.inputs_for(text, pace=pace, chunk_frames=chunk_frames)
        else:
            sentences = self.frontend.sentences(text)
        first = next(sentences)  # the text's checks run here; a text that passes them has a first sentence

        def chained() -> Iterator[Sentence]:
            yield first
            yield from sentences

        return self._context(TokenStream(chained(), self.frontend.end_id), pace=pace, chunk_frames=chunk_frames)

    def _check_options(self, pace: float | None, chunk_frames: int | None) -> None:
        if self.frontend is None:
            raise StackError(f"{self.path}: this pipeline has no text front end (only an addon's root pipeline has one)")
        if pace is not None:
            low, high = wire.PACE_RANGE
            value = float(pace)
            if not (math.isfinite(value) and low <= value <= high):
                raise InputError(f"input {wire.PACE.name} must be a finite number from {low} to {high} "
                                 f"(1 is the voice's own rate, 2 twice as fast), got {value}")
        if chunk_frames is not None:
            low_frames, high_frames = wire.CHUNK_FRAMES_RANGE
            if not low_frames <= int(chunk_frames) <= high_frames:
                raise InputError(f"input {wire.CHUNK_FRAMES.name} must be from {low_frames} to {high_frames} frames "
                                 f"(0 = the whole utterance in one response), got {chunk_frames}")

    @staticmethod
    def _context(tokens: Any, *, pace: float | None, chunk_frames: int | None) -> Tensors:
        env: Tensors = {"tokens": tokens}
        if pace is not None:
            env["pace"] = np.asarray(pace, dtype=np.float32)
        if chunk_frames is not None:
            env["chunk_frames"] = np.asarray(chunk_frames, dtype=np.int64)
        return env

    #: speak a text a sentence at a time (:meth:`lazy_inputs_for`); ``False`` phonemises the whole text before the
    #: first frame, as before.  ``MELSTREAM_WHOLE_TEXT=1`` makes it ``False`` in a process (so that
    #: benchmarks/first_frame.py can compare both in one run); the frames are the same either way.
    lazy_text: ClassVar[bool] = os.environ.get("MELSTREAM_WHOLE_TEXT", "") in ("", "0")

    @property
    def reads_text_lazily(self) -> bool:
        """True if the blocks can start on the text's first sentences (:attr:`StreamableBlock.lazy_tokens`):
        :meth:`stream_outputs` then reads the text a sentence at a time, as the blocks ask for it."""
        if not _lazy_ok(self.streamable_block):
            return False
        contract = getattr(self.sequence_block, "contract", None)  # the sequence block runs first, on every token
        return isinstance(contract, Contract) and not contract.reads

    @property
    def produces_audio(self) -> bool:
        """True if the stack ends in a vocoder: chunks then carry ``audio`` as well as ``mel``."""
        return "audio" in self.chunk_shapes

    @property
    def gives_words(self) -> bool:
        """True if this voice's chunks tell which token each frame speaks (``frame_tokens``, or attention
        ``alignment`` rows): :meth:`stream_outputs` can then give word timestamps (``words=True``)."""
        return "frame_tokens" in self.chunk_shapes or "alignment" in self.chunk_shapes

    def stream_outputs(self, text: str | bytes | Iterable[TextPiece], *, pace: float | None = None,
                       chunk_frames: int | None = None, words: bool = False) -> Iterator[Tensors]:
        """Yield the output tensors of each non-empty chunk: ``mel`` ``[T_i, n_mels]`` and, if the
        stack ends in a vocoder, ``audio`` ``[T_i * hop]`` (lazily).  ``text`` may come in pieces (see
        :meth:`lazy_inputs_for`); a stack that cannot start on a prefix of the text speaks them once they all
        have come.

        ``words=True``: every chunk also has ``"words"``, a list (possibly empty) of ``(text, start_s, end_s)``
        tuples, the words whose speech ended in that chunk, in seconds from the start of the stream
        (:class:`melstream.words.WordClock`: every word once, in order, the last ending at the end of the
        audio).  So that the last word can end with the audio, a chunk that may be the last leaves only once the
        next one is made or the stream has ended: on a voice with ``frame_tokens`` (durations: the frames reach
        every token), once the text's last word is known and the frames have reached it; on an attention voice
        (which may stop at any frame), once the text's last word is known (from then on, every chunk leaves
        one chunk later).  Should a stream end otherwise with words left (frames that
        end before tokens whose durations are all 0), they come on a last chunk with no frames.  A voice whose
        chunks do not tell their frames' tokens (:attr:`gives_words` is false) refuses ``words=True`` with a
        :class:`melstream.errors.StackError`, before anything is spoken.

        A request that makes no frames at all (every token spoken in 0 frames, e.g. a short text at a
        high ``pace``) is an :class:`InputError` at the end of the stream, not an empty stream."""
        keys = ("mel", "audio") if self.produces_audio else ("mel",)
        frames = 0
        lazy = self.lazy_text and self.reads_text_lazily
        if words and not self.gives_words:
            raise StackError(f"{self.path}: this voice cannot give word timestamps: its chunks carry neither "
                             f"frame_tokens nor alignment (they carry {', '.join(sorted(self.chunk_shapes))})")
        if lazy:
            context = self.lazy_inputs_for(text, pace=pace, chunk_frames=chunk_frames)
        elif words:  # the whole text's tokens from its sentences (the same tokens as encode), for their words
            self._check_options(pace, chunk_frames)
            whole = text if isinstance(text, (str, bytes)) else _joined(text)
            if hasattr(self.frontend, "sentences"):
                stream: TokenStream | None = TokenStream(self.frontend.sentences(whole), self.frontend.end_id)
                assert stream is not None
                context = self._context(stream.all(), pace=pace, chunk_frames=chunk_frames)
            else:  # a front end without sentences: no words
                stream = None
                context = self._context(self.frontend.encode(whole), pace=pace, chunk_frames=chunk_frames)
            feed = _WordFeed(self.frame_s, stream, exact="frame_tokens" in self.chunk_shapes)
        else:
            context = self.inputs_for(text if isinstance(text, (str, bytes)) else _joined(text), pace=pace, chunk_frames=chunk_frames)
        if words and lazy:
            feed = _WordFeed(self.frame_s, context["tokens"], exact="frame_tokens" in self.chunk_shapes)
        if words:
            yield from feed.chunks(self.generate(context), keys, self.output)
            frames = feed.frames
        else:
            for chunk in self.generate(context):
                if len(chunk[self.output]):
                    frames += len(chunk[self.output])
                    yield {k: chunk[k] for k in keys}
        if frames == 0:
            said = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace") if isinstance(text, bytes) else "(the text stream)"
            preview = repr(said if len(said) <= 40 else said[:40] + "...")
            at = f" at {wire.PACE.name} {float(pace)}" if pace is not None else ""
            hint = f"a lower {wire.PACE.name} or a longer text" if pace is not None and pace > 1 else "a longer text"
            raise InputError(f"input {wire.TEXT.name} makes no audio{at}: this voice speaks {preview} in 0 frames "
                             f"({hint} would make some)")

    def stream(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> Iterator[np.ndarray]:
        """Yield ``[T_i, n_mels]`` float32 chunks for ``text`` as they are produced (lazily)."""
        for chunk in self.stream_outputs(text, pace=pace, chunk_frames=chunk_frames):
            yield chunk[self.output]

    def synthesize(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> np.ndarray:
        """The whole utterance, ``[T, n_mels]``: the concatenation of :meth:`stream`."""
        chunks = list(self.stream(text, pace=pace, chunk_frames=chunk_frames))
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, self.n_mels), np.float32)


class _WordFeed:
    """:meth:`StreamablePipeline.stream_outputs` with ``words=True``: its chunks, each with its ``"words"``, from
    a :class:`melstream.words.WordClock` told the words of ``tokens``'s sentences as they are read."""

    def __init__(self, frame_s: float, tokens: TokenStream | None, *, exact: bool) -> None:
        from melstream.words import WordClock

        self.tokens = tokens
        # frame_tokens (durations): every token's frames are made, so the stream ends only after its frames reach
        # the last word; attention may stop before it: hold every chunk once the last word is known
        self.exact = exact
        self.clock = WordClock(frame_s, final=tokens is None)
        self.sentences = 0  # sentences of `tokens` whose words the clock has
        self.frames = 0

    def _sync(self) -> None:
        tokens = self.tokens
        if tokens is None:
            return
        while self.sentences < len(tokens.sentences):
            at, sentence = tokens.starts[self.sentences], tokens.sentences[self.sentences]
            self.clock.add_words([(w.text, at + w.start, at + w.end) for w in sentence.words])
            self.sentences += 1
        if tokens.complete and not self.clock.final:
            self.clock.add_words((), final=True)

    def chunks(self, chunks: Iterator[Tensors], keys: tuple[str, ...], output: str) -> Iterator[dict[str, Any]]:
        from melstream.words import frame_tokens

        held: dict[str, Any] | None = None
        empty: dict[str, Any] = {}
        for chunk in chunks:
            n = len(chunk[output])
            if not n:
                continue
            empty = {k: chunk[k][:0] for k in keys}
            tokens = frame_tokens(chunk)
            if tokens is None or len(tokens) != n:
                raise StackError(f"a chunk of {n} frames carries no per-frame tokens for word timestamps")
            self._sync()
            if held is not None:
                yield held
                held = None
            self.frames += n
            out: dict[str, Any] = {k: chunk[k] for k in keys}
            out["words"] = self.clock.feed(tokens)
            if self.clock.near_end if self.exact else self.clock.pending:  # it may end now: keep it for the last word
                held = out
            else:
                yield out
        self._sync()
        if not self.clock.final:
            self.clock.add_words((), final=True)
        rest = self.clock.finish()
        if held is not None:
            held["words"] = held["words"] + rest
            yield held
        elif rest and self.frames:  # frames ended before the last words (an attention that stopped early)
            yield {**empty, "words": rest}


def _joined(pieces: Iterable[TextPiece]) -> str:
    """A text stream's whole text (waits for every piece)."""
    return "".join(piece.text for piece in pieces)


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
