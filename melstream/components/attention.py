"""AttentionDecoder: a legacy autoregressive decoder, one network call per frame."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from melstream.blocks import Block, Contract, SequenceBlock, Shapes, StreamableBlock, Tensors, TokenStream, chunk_size
from melstream.components.segments import declared_context, encode_span
from melstream.components.stretch import Stretcher, pace_of
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component
from melstream.runners.lockstep import END, Lockstep, Recurrence
from melstream.runners.schedule import waiting

if TYPE_CHECKING:
    from melstream.blocks import BuildContext

log = logging.getLogger("melstream.attention")

STEP_INPUTS = ("prev_mel", "state", "alignment", "memory")
STEP_OUTPUTS = ("mel", "stop_logit", "state_out", "alignment_out")


@register_component("AttentionDecoder")
class AttentionDecoder(StreamableBlock):
    """Context in: ``memory`` ``[N, D]`` (the attention encoder's output), or ``tokens`` with an ``encoder``.
    Chunks out: ``mel`` ``[c, n_mels]`` and ``alignment`` ``[c, K]`` (attention weights per frame).

    Frame by frame, the step network (inputs ``prev_mel [1, n_mels]``, ``state [1, H]``,
    ``alignment [1, N]``, ``memory [1, N, D]``; outputs ``mel``, ``stop_logit [1, 1]``,
    ``state_out``, ``alignment_out``) makes the next frame from the previous one (teacher forcing
    at training time, its own output here).  Generation ends when the stop logit is > 0 or, as a
    guard against attention that never reaches the end, after ``min(max_frames,
    max_frames_per_token * N)`` frames (logged as a warning).  Frames are grouped into chunks of
    ``chunk_frames``; the first chunk leaves as soon as its frames exist.

    Optional ``encoder`` (a SequenceBlock producing ``memory`` from ``tokens``): the block then
    encodes the text itself, segment by segment, just ahead of the attention.  Forward attention
    moves at most one token per step, so a step reads the memory only up to one token past the last
    one with any mass, and the memory beyond is not needed yet; each segment is encoded exactly (with
    the encoder's declared ``context_tokens``), so the frames equal those of a whole-text
    encoding, and time to the first frame no longer grows with the text.

    The text itself may come as it is read (``tokens`` a :class:`~melstream.blocks.TokenStream`, the root
    pipeline's sentence-by-sentence text, or a text that arrives in pieces): each segment then reads the text
    as far as its window, and until the text's end has been read the step network is told that the text
    ends just past the encoded memory (its length input), where the attention cannot reach yet, so the frames
    are the whole text's (:meth:`plan`); the frame guard grows with the text read (:meth:`limit`).  A step
    network without a length input reads the whole text first.  What that costs a text written as it is spoken:
    the alignment's soft tail runs ahead of its most likely token until it underflows (the shipped voice: about
    70 tokens, a sentence), and exactness needs the text known that far, so a sentence's last frames wait for
    about a sentence more of the text (or its end, or a flush).

    ``alignment``: every column is a token of the whole text (column ``i``: token ``i``; the argmax of a row is
    the token that frame speaks).  With the whole text known from the start, ``K = N`` in every chunk; read as
    it goes, ``K`` is the tokens encoded so far when the chunk's last frame was made (columns past it are 0),
    so it may grow from chunk to chunk, and is ``N`` once the text's end has been read.

    ``pace`` (optional, in the context; >1 faster) means what it means on a duration-based voice: the
    attention makes its frames at its own rate, and they leave time-stretched by ``1 / pace`` (linear
    interpolation in time of ``mel`` and ``alignment``, ``round(T / pace)`` frames; see
    :class:`melstream.components.stretch.TimeStretch`), streamed exactly as the whole utterance
    stretched at once.  Without ``pace``, or at 1, the frames are exactly the attention's own.
    """

    #: reads its text as the attention reaches it (with an ``encoder``: see the class doc)
    lazy_tokens = True
    child_slots: ClassVar[dict[str, tuple[str, bool]]] = {"encoder": ("sequence", False)}
    optional_slots: ClassVar[frozenset[str]] = frozenset({"encoder"})

    def __init__(self, ctx: BuildContext, *, network: str = "decoder_step", chunk_frames: int = 8,
                 max_frames: int = 30000, max_frames_per_token: int = 40, encoder: SequenceBlock | None = None,
                 first_segment_tokens: int = 16, segment_tokens: int = 96, path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.encoder = encoder
        self.margin = declared_context(ctx, encoder, f"{path}.encoder") if encoder is not None else 0
        if first_segment_tokens < 1 or segment_tokens < 1:
            raise StackError(f"{path}: segment sizes must be >= 1, got {first_segment_tokens}, {segment_tokens}")
        self.segments = (first_segment_tokens, segment_tokens)
        self.network = ctx.network(network, path)
        spec = self.network.spec
        if spec.input_names() != STEP_INPUTS or spec.output_names() != STEP_OUTPUTS:
            raise StackError(f'{path}: network "{network}" must have inputs {list(STEP_INPUTS)} and outputs '
                             f"{list(STEP_OUTPUTS)}, it has {list(spec.input_names())} -> {list(spec.output_names())}")
        for name, value in (("chunk_frames", chunk_frames), ("max_frames", max_frames),
                            ("max_frames_per_token", max_frames_per_token)):
            if value < 1:
                raise StackError(f"{path}.{name}: must be >= 1, got {value}")
        self.n_mels = spec.inputs[0].shape[-1]
        self.hidden = spec.inputs[1].shape[-1]
        if self.n_mels != ctx.addon.audio.n_mels:
            raise StackError(f'{path}: network "{network}" makes frames of {self.n_mels} mel bins, but the addon\'s '
                             f"audio.n_mels is {ctx.addon.audio.n_mels}")
        # memory [N, D] comes from the context, or from the block's own encoder (checked in `check`)
        self.contract = Contract(reads={"memory": ("N", spec.inputs[3].shape[-1])},
                                 emits={"mel": ("T", "n_mels"), "alignment": ("T", "N")})
        self.chunk_frames = chunk_frames
        self.max_frames = max_frames
        self.max_frames_per_token = max_frames_per_token
        self.guard_hits = 0  # how many utterances hit the max-frames guard (diagnostics and tests)
        audio = ctx.addon.audio
        self._frame_s = audio.hop_length / audio.sample_rate
        self._lockstep: Lockstep | None = None  # made at the first stream that needs it
        self._engine_lock = threading.Lock()

    def children(self) -> list[Block]:
        return [self.encoder] if self.encoder is not None else []

    def check(self, context: Shapes, upstream: Shapes | None, sizes: Mapping[str, int]) -> Shapes:
        if self.encoder is not None:
            context = {**context, **self.encoder.check(context, sizes)}
        return super().check(context, upstream, sizes)

    def params(self) -> dict[str, Any]:
        return {"network": self.network.spec.name, "chunk_frames": self.chunk_frames, "max_frames": self.max_frames}

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        step = chunk_size(context, self.chunk_frames)
        pace = pace_of(context)
        tokens: Any = context.get("tokens")
        if isinstance(tokens, TokenStream) and (self.encoder is None or self.network.spec.length is None):
            # no encoder of its own to read the text as it goes, or a step network that cannot be told that the
            # text ends beyond its memory (no length input): the whole text first
            context = {**context, "tokens": tokens.all()}
        if self.network.lockstep_rows > 0:  # every stream's steps in one call per step (the runner's choice)
            frames = self._frames_lockstep(context, step)
            yield from frames if pace is None else _stretch(frames, pace, step)
        elif pace is None:
            yield from self._frames(context, step)
        else:  # frame by frame into the stretch, which makes chunks of `step` as soon as they are exact
            yield from _stretch(self._frames(context, 1), pace, step)

    def limit(self, known: int, total: int | None) -> int:
        """The frame guard: ``min(max_frames, max_frames_per_token * N)`` once the text's ``total`` of ``N`` tokens
        is known; before, ``min(max_frames, max_frames_per_token * known)``, and a stream that reaches it reads more
        of the text before it decides (the guard only grows, to the whole text's)."""
        return min(self.max_frames, self.max_frames_per_token * (known if total is None else total))

    def plan(self, alignment: np.ndarray, reach: int, total: int | None, encoded: int) -> tuple[int, int, int, int]:
        """The next step's ``(need, lo, hi, length)``: it may run once ``need`` tokens of memory are encoded, on the
        memory and alignment ``[lo, hi)``, told that the text ends at ``length`` (counted from ``lo``).

        ``total``: the text's ``N`` tokens, or None while it is being read (``encoded`` tokens so far).  Mass
        moves at most one token a step, so a step reads memory only up to ``reach + 1`` (``reach``: the last
        token with any mass in ``alignment``, :func:`_reach`) and puts mass at most there.  With the text complete the step is the whole-text
        step (at fixed sizes, :meth:`_step`'s window).  While it is not, the end lies beyond the encoded
        memory (N > encoded): the step runs on the ``encoded`` tokens with its length input one past them,
        which, as long as ``reach + 1 < encoded``, changes nothing (the end token, which keeps its mass and
        drives the stop logit, has none yet: melstream/nets.py), so the frames are the whole text's.  At fixed
        sizes the window must also be the whole text's: once the attention has moved ``width // 2`` tokens in,
        its window ``[lo, lo + width)`` must be encoded (then ``N > lo + width`` and the whole text's window is
        the same)."""
        width = self.network.max_size
        if total is not None:
            need = min(reach + 2, total)
            if width is None or total <= width:
                return need, 0, total, total
            lo = min(max(int(alignment.argmax()) - width // 2, 0), total - width)
            return need, lo, lo + width, total - lo
        need = reach + 2
        lo = 0 if width is None else max(int(alignment.argmax()) - width // 2, 0)
        if lo == 0:
            hi = encoded if width is None else min(encoded, width)
            return need, 0, hi, hi + 1
        assert width is not None
        return max(need, lo + width), lo, lo + width, width + 1

    def _engine(self) -> Lockstep:
        with self._engine_lock:
            if self._lockstep is None:
                self._lockstep = Lockstep(self.network, context=("memory",), max_rows=self.network.lockstep_rows,
                                          on_batch=self.network.on_batch, on_busy=self.network.on_busy)
            return self._lockstep


    def _frames_lockstep(self, context: Mapping[str, np.ndarray], step: int) -> Iterator[Tensors]:
        """:meth:`_frames` with the steps run by the block's :class:`Lockstep` together with every other stream's.
        This stream's thread encodes the memory (reading the text as far as it needs) a segment ahead of the
        attention, when the engine asks (:data:`MORE`), and hands on the chunks the engine makes.  It reads more
        text only when the attention cannot go on without it (so, with a text that comes in pieces, every chunk
        made so far has been handed on before it waits for the next piece); while it waits, the engine steps the
        other streams."""
        memory = _Memory(self, context)
        if not memory.start():
            return
        row = _AttentionRow(self, memory, step, frame_s=self._frame_s)
        engine = self._engine()
        engine.add(row)
        try:
            while True:
                try:
                    item = row.chunks.get_nowait()
                except queue.Empty:
                    if row.feed():  # the memory, a segment further (or more of the text, for the guard)
                        engine.wake()
                        continue
                    with waiting():  # not compute: a listener-first slot held by this stream goes to others meanwhile
                        item = row.chunks.get()
                if item is MORE:
                    row.asked = False
                    continue
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # ended, failed, or closed by a cancelled stream: the engine drops the row
            engine.remove(row)
        if row.guarded:
            self._guarded(row.limit, memory.state.total or 0)

    def _guarded(self, limit: int, n: int) -> None:
        self.guard_hits += 1
        log.warning("%s: no stop token after %d frames (%d tokens); ending the utterance at the guard", self.path, limit, n)

    def _step(self, prev: np.ndarray, state: np.ndarray, alignment: np.ndarray, memory: np.ndarray,
              window: tuple[int, int, int]) -> Tensors:
        """One step on the memory and alignment ``[lo, hi)`` of ``window`` (``(lo, hi, length)``: :meth:`plan`), the
        alignment out put back at its tokens (``alignment``'s width; zero outside the window).

        Where the step network runs at fixed sizes and the text is longer than the largest (``network.max_size``),
        it runs on a window of that many tokens centred on the attention's most likely token, told where the text
        ends (its length input); the alignment outside the window is dropped.  Why that is exact enough: the step
        reads only the most likely token and the one after it (``hard``), and moves mass at most one token per
        step, so everything it reads is inside the window; what is dropped is the alignment's far tails (the
        shipped voice, a 2,371-token text: at most 5e-5 of the mass lies more than 127 tokens from the most likely
        token, and none is measurable 256 away; the largest bucket is 512)."""
        lo, hi, length = window
        feed = {"prev_mel": prev, "state": state, "alignment": alignment[:, lo:hi], "memory": memory[None, lo:hi]}
        if self.network.spec.length is not None:
            feed[self.network.spec.length.name] = np.full((1, 1), length, np.int64)
        out = self.network(feed)
        if lo == 0 and hi == alignment.shape[1]:
            return out
        whole = np.zeros_like(alignment)
        whole[:, lo:hi] = out["alignment_out"]
        return {**out, "alignment_out": whole}

    def _frames(self, context: Mapping[str, np.ndarray], step: int) -> Iterator[Tensors]:
        """The attention's own frames, in chunks of ``step``; the memory encoded (and the text read) as the
        attention reaches it."""
        memory = _Memory(self, context)
        if not memory.start():
            return
        prev = np.zeros((1, self.n_mels), np.float32)
        state = np.zeros((1, self.hidden), np.float32)
        alignment = np.zeros((1, max(memory.state.total or 1, 1)), np.float32)
        alignment[0, 0] = 1.0
        mels: list[np.ndarray] = []
        aligns: list[np.ndarray] = []
        t = reach = 0
        while True:
            now = memory.state
            limit = self.limit(now.known, now.total)
            if t >= limit:
                if now.total is None and t < self.max_frames:  # the guard grows with the text: read on
                    memory.read_more()
                    continue
                break
            need, lo, hi, length = self.plan(alignment[0], reach, now.total, now.encoded)
            if now.encoded < need:  # attention can reach beyond the memory in this step
                memory.fill()
                continue
            alignment = _widened(alignment, max(hi, now.total or 0))
            out = self._step(prev, state, alignment, now.memory, (lo, hi, length))
            prev, state, alignment = out["mel"], out["state_out"], out["alignment_out"]
            reach = _reach(alignment[0], reach)
            t += 1
            mels.append(prev[0])
            aligns.append(alignment[0])
            stop = float(out["stop_logit"][0, 0]) > 0.0
            if len(mels) == step or stop:
                yield _chunk(mels, aligns)
                mels, aligns = [], []
            if stop:
                return
        self._guarded(limit, memory.state.total or 0)
        if mels:
            yield _chunk(mels, aligns)


#: what the lockstep engine puts in a row's queue to ask its stream for more memory
MORE = object()


class _Snapshot(NamedTuple):
    """What a :class:`_Memory` holds, published at once (the lockstep engine reads it from its own thread)."""

    memory: np.ndarray  # [capacity, D]: tokens [0, encoded) final
    encoded: int
    known: int  # tokens of the text read so far
    total: int | None  # the text's N tokens once it has all been read
    next_needs: int  # tokens the next segment's window needs known (its end plus the encoder's context)


class _Memory:
    """The attention's memory, encoded segment by segment (``first_segment_tokens``, then ``segment_tokens``, each
    from its window with the encoder's context: exactly the whole text's values), reading the text (a
    :class:`~melstream.blocks.TokenStream`) only as far as each segment's window: the whole text's segments, so
    the same memory, however the text comes."""

    def __init__(self, block: AttentionDecoder, context: Mapping[str, Any]) -> None:
        self.block = block
        self.context = context
        tokens: Any = context.get("tokens")
        self.stream = tokens if isinstance(tokens, TokenStream) else None
        self._next = (0, block.segments[0])
        if block.encoder is None:
            if "memory" not in context:
                raise SynthesisError(f"{block.path}: AttentionDecoder needs 'memory' in the context, which has {sorted(context)}")
            memory = np.ascontiguousarray(context["memory"], dtype=np.float32)
            self.state = _Snapshot(memory, len(memory), len(memory), len(memory), len(memory))
            return
        dim = block.network.spec.inputs[3].shape[-1]
        if self.stream is None:
            n = len(tokens)
            self.state = _Snapshot(np.zeros((n, dim), np.float32), 0, n, n, block.segments[0] + block.margin)
        else:
            self.state = _Snapshot(np.zeros((0, dim), np.float32), 0, 0, None, block.segments[0] + block.margin)

    def start(self) -> bool:
        """The first segment; False for a text without tokens."""
        if self.block.encoder is not None:
            self.fill()
        return self.state.encoded > 0

    def fill(self) -> bool:
        """Encode the next segment, reading the text as far as its window (this may wait for text); False when
        every token is encoded."""
        block, (a, size) = self.block, self._next
        encoder = block.encoder
        if encoder is None:
            return False
        if self.stream is None:
            known, total, tokens = self.state.known, self.state.total, self.context["tokens"]
        else:
            known = self.stream.ensure(a + size + block.margin)
            total = known if self.stream.complete else None
            tokens = self.stream.known
        if a >= known:  # only when the whole text is encoded (ensure stops short only at the text's end)
            self.state = self.state._replace(known=known, total=total)
            return False
        b = min(a + size, known)
        window = {**self.context, "tokens": tokens}
        values = encode_span(encoder, window, a, b, block.margin)["memory"]
        memory = self.state.memory
        if len(memory) < b:  # a new buffer (the engine may be reading the old one): the text's size or twice
            grown = np.zeros((known if total is not None else max(2 * len(memory), b, 64), memory.shape[1]), np.float32)
            grown[:a] = memory[:a]
            memory = grown
        memory[a:b] = values
        self._next = (b, block.segments[1])
        self.state = _Snapshot(memory, b, known, total, b + block.segments[1] + block.margin)
        return True

    def read_more(self) -> None:
        """Read the text one sentence further (the frame guard grows with it; this may wait for text)."""
        assert self.stream is not None
        known = self.stream.ensure(self.state.known + 1)
        self.state = self.state._replace(known=known, total=known if self.stream.complete else None)


class _AttentionRow(Recurrence):
    """One stream's attention in the block's :class:`Lockstep`: the same recursion as
    :meth:`AttentionDecoder._frames` (the same :meth:`AttentionDecoder.plan`), one row of each step.  The
    stream's thread fills ``memory`` (:meth:`feed`); the engine asks it to (:data:`MORE`) when the attention comes
    within a segment of the encoded memory, and when the row cannot step without more (it is then not ready,
    and the other rows step without it)."""

    def __init__(self, block: AttentionDecoder, memory: _Memory, step: int, *, frame_s: float) -> None:
        now = memory.state
        alignment = np.zeros(max(now.total or 1, 1), np.float32)
        alignment[0] = 1.0
        super().__init__({"prev_mel": np.zeros(block.n_mels, np.float32), "state": np.zeros(block.hidden, np.float32),
                          "alignment": alignment, "memory": now.memory}, len(alignment), frame_s=frame_s)
        self.block = block
        self.memory = memory
        self.step = step
        self.lookahead = block.segments[1]
        self.limit = block.max_frames
        self.need = 0  # tokens of memory the next step needs (set by the engine)
        self.need_known = 0  # tokens of text the guard needs known before the next step (set by the engine)
        self.asked = False  # a MORE is in the queue
        self.t = 0
        self.reach = 0  # the last token with any mass
        self.guarded = False
        self._seen: tuple[int, int] = (id(now.memory), now.encoded)
        self._window = (0, 1, 1)
        self.mels: list[np.ndarray] = []
        self.aligns: list[np.ndarray] = []

    # the stream's thread ------------------------------------------------------------------------------------
    def feed(self) -> bool:
        """Whatever the attention is waiting for, or will need within a segment and costs no waiting for text:
        one segment more of memory, or (the guard) more of the text.  False when nothing is to be done."""
        now = self.memory.state
        if now.total is not None and now.encoded >= now.total:
            return False
        known_enough = now.total is not None or now.known >= now.next_needs
        guard = now.total is None and now.known < self.need_known
        if (guard or (now.encoded < self.need and not known_enough)) and not self.chunks.empty():
            return True  # it is about to wait for text: first hand on the chunks made so far
        if guard:
            self.memory.read_more()
            return True
        if now.encoded < self.need or (known_enough and now.encoded < self.need + self.lookahead):
            return self.memory.fill()
        return False

    # the engine's thread ------------------------------------------------------------------------------------
    def _ask(self) -> None:
        if not self.asked:
            self.asked = True
            self.chunks.put(MORE)

    def ready(self) -> bool:
        block, now = self.block, self.memory.state
        limit = block.limit(now.known, now.total)
        self.limit = limit if now.total is not None else block.max_frames
        if self.t >= limit and now.total is None and self.t < block.max_frames:  # the guard: read on first
            self.need_known = now.known + 1
            self._ask()
            return False
        alignment = self.inputs["alignment"]
        self.need, lo, hi, length = block.plan(alignment, self.reach, now.total, now.encoded)
        finished = now.total is not None and now.encoded >= now.total
        if now.encoded < self.need:
            self._ask()
            return False
        if not finished and now.encoded < self.need + self.lookahead and (now.total is not None or now.known >= now.next_needs):
            self._ask()  # the next segment, ahead of the attention (its text is known: no waiting)
        seen = (id(now.memory), now.encoded)
        if seen != self._seen:  # the memory grew since the engine last copied it
            self._seen = seen
            self.version += 1
            self.inputs["memory"] = now.memory
        width = max(hi, now.total or 0)
        if len(alignment) < width:
            self.inputs["alignment"] = _widened(alignment, width)
            self.size = width
        self._window = (lo, hi, length)
        return True

    def window(self) -> tuple[int, int, int]:
        return self._window

    def advance(self, outputs: dict[str, np.ndarray], lo: int) -> bool:
        alignment = outputs["alignment_out"]
        if len(alignment) != self.size:  # a window: the rest of the alignment is dropped (see AttentionDecoder._step)
            whole = np.zeros(self.size, np.float32)
            whole[lo:lo + len(alignment)] = alignment
            alignment = whole
        mel = outputs["mel"]
        self.inputs["prev_mel"], self.inputs["state"], self.inputs["alignment"] = mel, outputs["state_out"], alignment
        self.reach = _reach(alignment, self.reach)
        self.mels.append(mel)
        self.aligns.append(alignment)
        self.t += 1
        stop = float(outputs["stop_logit"][0]) > 0.0
        end = stop or self.t >= self.limit
        if self.mels and (len(self.mels) == self.step or end):
            self.emit(_chunk(self.mels, self.aligns), len(self.mels))
            self.mels, self.aligns = [], []
        self.guarded = end and not stop
        return end


def _reach(alignment: np.ndarray, previous: int) -> int:
    """The last token with any mass in ``alignment`` (``[K]``), one step after it was ``previous``: mass moves at
    most one token a step, so it is at most one further (and, where a tail underflowed to 0 or a window dropped
    it, may be nearer)."""
    r = min(previous + 1, len(alignment) - 1)
    if r == 0 or alignment[r] != 0:
        return r
    if alignment[r - 1] != 0:
        return r - 1
    nonzero = np.flatnonzero(alignment[:r])
    return int(nonzero[-1]) if len(nonzero) else 0


def _widened(alignment: np.ndarray, width: int) -> np.ndarray:
    """``alignment`` (``[..., K]``) with zeros up to ``width`` tokens (itself when already that wide)."""
    if alignment.shape[-1] >= width:
        return alignment
    out = np.zeros((*alignment.shape[:-1], width), alignment.dtype)
    out[..., :alignment.shape[-1]] = alignment
    return out


def _chunk(mels: list[np.ndarray], aligns: list[np.ndarray]) -> Tensors:
    """A chunk of frames: ``mel`` ``[c, n_mels]`` and ``alignment`` ``[c, K]``, each row widened to the last's ``K``
    (a text read as it goes: the alignment's rows widen as its tokens are read; each column is a token of the
    whole text)."""
    width = max(len(a) for a in aligns)
    return {"mel": np.stack(mels), "alignment": np.stack([_widened(a, width) for a in aligns])}


def _stretch(frames: Iterator[Tensors], pace: float, step: int) -> Iterator[Tensors]:
    """:func:`melstream.components.stretch.stretch` of the attention's chunks, whose ``alignment`` may widen from
    chunk to chunk (a text read as it goes): the stretcher's history is widened with zeros to each new chunk's
    width (the same interpolation), and each chunk's rows to its widest; ``mel`` is exactly :func:`stretch`'s."""
    stretcher = Stretcher(pace)
    mels: list[np.ndarray] = []
    aligns: list[np.ndarray] = []

    def add(out: Tensors) -> Iterator[Tensors]:
        if out and len(out["mel"]):
            mels.extend(out["mel"])
            aligns.extend(out["alignment"])
        while len(mels) >= step:
            yield _chunk(mels[:step], aligns[:step])
            del mels[:step], aligns[:step]

    for chunk in frames:
        held = stretcher.buf.get("alignment")
        if held is not None and held.shape[1] < chunk["alignment"].shape[1]:
            stretcher.buf["alignment"] = _widened(held, chunk["alignment"].shape[1])
        yield from add(stretcher.push(chunk, "mel"))
    yield from add(stretcher.finish())
    if mels:
        yield _chunk(mels, aligns)
