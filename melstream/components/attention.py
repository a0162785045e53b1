"""AttentionDecoder: a legacy autoregressive decoder, one network call per frame."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from melstream.blocks import Block, Contract, SequenceBlock, Shapes, StreamableBlock, Tensors, chunk_size
from melstream.components.segments import declared_context, encode_span, segment_bounds
from melstream.components.stretch import pace_of, stretch
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
    """Context in: ``memory`` ``[N, D]`` (the attention encoder's output).  Chunks out: ``mel``
    ``[c, n_mels]`` and ``alignment`` ``[c, N]`` (attention weights per frame).

    Frame by frame, the step network (inputs ``prev_mel [1, n_mels]``, ``state [1, H]``,
    ``alignment [1, N]``, ``memory [1, N, D]``; outputs ``mel``, ``stop_logit [1, 1]``,
    ``state_out``, ``alignment_out``) makes the next frame from the previous one (teacher forcing
    at training time, its own output here).  Generation ends when the stop logit is > 0 or, as a
    guard against attention that never reaches the end, after ``min(max_frames,
    max_frames_per_token * N)`` frames (logged as a warning).  Frames are grouped into chunks of
    ``chunk_frames``; the first chunk leaves as soon as its frames exist.

    Optional ``encoder`` (a SequenceBlock producing ``memory`` from ``tokens``): the block then
    encodes the text itself, segment by segment, just ahead of the attention.  Forward attention
    moves at most one token per step, so at step ``t`` every weight beyond token ``t + 1`` is
    exactly zero and the memory there is not needed yet; each segment is encoded exactly (with
    the encoder's declared ``context_tokens``), so the frames equal those of a whole-text
    encoding, and time to the first frame no longer grows with the text.

    ``pace`` (optional, in the context; >1 faster) means what it means on a duration-based voice: the
    attention makes its frames at its own rate, and they leave time-stretched by ``1 / pace`` (linear
    interpolation in time of ``mel`` and ``alignment``, ``round(T / pace)`` frames; see
    :class:`melstream.components.stretch.TimeStretch`), streamed exactly as the whole utterance
    stretched at once.  Without ``pace``, or at 1, the frames are exactly the attention's own.
    """

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

    def _memory(self, context: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Iterator[int]]:
        """The ``[1, N, D]`` memory, and an iterator that, sent nothing, fills it one segment further
        and yields how many tokens are now encoded (whole memory: everything at once)."""
        if self.encoder is None:
            if "memory" not in context:
                raise SynthesisError(f"{self.path}: AttentionDecoder needs 'memory' in the context, which has {sorted(context)}")
            memory = np.ascontiguousarray(context["memory"][None], dtype=np.float32)
            return memory, iter([memory.shape[1]])
        n = len(context["tokens"])
        memory = np.zeros((1, n, self.network.spec.inputs[3].shape[-1]), np.float32)
        encoder = self.encoder

        def fill() -> Iterator[int]:
            for a, b in segment_bounds(n, *self.segments):
                memory[0, a:b] = encode_span(encoder, context, a, b, self.margin)["memory"]
                yield b

        return memory, fill()

    def generate(self, context: Mapping[str, np.ndarray], upstream: Iterator[Tensors] | None = None) -> Iterator[Tensors]:
        step = chunk_size(context, self.chunk_frames)
        pace = pace_of(context)
        if self.network.lockstep_rows > 0:  # every stream's steps in one call per step (the runner's choice)
            frames = self._frames_lockstep(context, step)
            yield from frames if pace is None else stretch(frames, pace, step)
        elif pace is None:
            yield from self._frames(context, step)
        else:  # frame by frame into the stretch, which makes chunks of `step` as soon as they are exact
            yield from stretch(self._frames(context, 1), pace, step)

    def _engine(self) -> Lockstep:
        with self._engine_lock:
            if self._lockstep is None:
                self._lockstep = Lockstep(self.network, context=("memory",), max_rows=self.network.lockstep_rows,
                                          on_batch=self.network.on_batch)
            return self._lockstep

    def _frames_lockstep(self, context: Mapping[str, np.ndarray], step: int) -> Iterator[Tensors]:
        """:meth:`_frames` with the steps run by the block's :class:`Lockstep` together with every other stream's:
        this stream's thread encodes its text segment by segment, ahead of the attention, and hands on the
        chunks the engine makes."""
        memory, filler = self._memory(context)
        n = memory.shape[1]
        if n == 0:
            return
        row = _AttentionRow(self, memory[0], step, frame_s=self._frame_s)
        row.encoded = next(filler, n)
        engine = self._engine()
        engine.add(row)
        try:
            while True:
                if row.encoded < n:  # the rest of the text, a segment at a time, handing on chunks that are ready
                    try:
                        item = row.chunks.get_nowait()
                    except queue.Empty:
                        row.encoded = next(filler, n)
                        engine.wake()
                        continue
                else:
                    with waiting():  # not compute: a listener-first slot held by this stream goes to others meanwhile
                        item = row.chunks.get()
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # ended, failed, or closed by a cancelled stream: the engine drops the row
            engine.remove(row)
        if row.guarded:
            self._guarded(row.limit, n)

    def _guarded(self, limit: int, n: int) -> None:
        self.guard_hits += 1
        log.warning("%s: no stop token after %d frames (%d tokens); ending the utterance at the guard", self.path, limit, n)

    def _step(self, prev: np.ndarray, state: np.ndarray, alignment: np.ndarray, memory: np.ndarray) -> Tensors:
        """One step.  Where the step network runs at fixed sizes and the memory is longer than the largest
        (``network.max_size``), it runs on a window of that many tokens centred on the attention's most likely
        token, told where the text ends (its length input); the alignment outside the window is dropped.

        Why that is exact enough: the step reads only the most likely token and the one after it (``hard``),
        and moves mass at most one token per step, so everything it reads is inside the window; what is dropped
        is the alignment's far tails (the shipped voice, a 2,371-token text: at most 5e-5 of the mass lies
        more than 127 tokens from the most likely token, and none is measurable 256 away; the largest bucket
        is 512)."""
        width = self.network.max_size
        n = memory.shape[1]
        if width is None or n <= width:
            return self.network({"prev_mel": prev, "state": state, "alignment": alignment, "memory": memory})
        length = self.network.spec.length
        assert length is not None  # a network at fixed sizes has one (melstream.runners.fixed.check_fixed)
        lo = min(max(int(alignment[0].argmax()) - width // 2, 0), n - width)
        out = self.network({"prev_mel": prev, "state": state, "alignment": alignment[:, lo:lo + width],
                            "memory": memory[:, lo:lo + width], length.name: np.full((1, 1), n - lo, np.int64)})
        whole = np.zeros_like(alignment)
        whole[:, lo:lo + width] = out["alignment_out"]
        return {**out, "alignment_out": whole}

    def _frames(self, context: Mapping[str, np.ndarray], step: int) -> Iterator[Tensors]:
        """The attention's own frames, in chunks of ``step``."""
        memory, filler = self._memory(context)
        n = memory.shape[1]
        if n == 0:
            return
        encoded = next(filler, n)
        limit = min(self.max_frames, self.max_frames_per_token * n)
        prev = np.zeros((1, self.n_mels), np.float32)
        state = np.zeros((1, self.hidden), np.float32)
        alignment = np.zeros((1, n), np.float32)
        alignment[0, 0] = 1.0
        mels: list[np.ndarray] = []
        aligns: list[np.ndarray] = []
        for t in range(limit):
            while encoded <= min(t + 1, n - 1):  # attention can reach token t + 1 in this step
                encoded = next(filler, n)
            out = self._step(prev, state, alignment, memory)
            prev, state, alignment = out["mel"], out["state_out"], out["alignment_out"]
            mels.append(prev[0])
            aligns.append(alignment[0])
            stop = float(out["stop_logit"][0, 0]) > 0.0
            if len(mels) == step or stop:
                yield {"mel": np.stack(mels), "alignment": np.stack(aligns)}
                mels, aligns = [], []
            if stop:
                return
        self._guarded(limit, n)
        if mels:
            yield {"mel": np.stack(mels), "alignment": np.stack(aligns)}


class _AttentionRow(Recurrence):
    """One stream's attention in the block's :class:`Lockstep`: the same recursion as
    :meth:`AttentionDecoder._frames` (and :meth:`AttentionDecoder._step`'s window at fixed sizes), one row of
    each step.  ``memory`` ``[N, D]`` is filled by the stream's thread up to ``encoded`` tokens."""

    def __init__(self, block: AttentionDecoder, memory: np.ndarray, step: int, *, frame_s: float) -> None:
        n = memory.shape[0]
        alignment = np.zeros(n, np.float32)
        alignment[0] = 1.0
        super().__init__({"prev_mel": np.zeros(block.n_mels, np.float32), "state": np.zeros(block.hidden, np.float32),
                          "alignment": alignment, "memory": memory}, n, frame_s=frame_s)
        self.width = block.network.max_size
        self.step = step
        self.limit = min(block.max_frames, block.max_frames_per_token * n)
        self.encoded = 0
        self.t = 0
        self.guarded = False
        self.mels: list[np.ndarray] = []
        self.aligns: list[np.ndarray] = []

    def ready(self) -> bool:
        ready = self.encoded > min(self.t + 1, self.size - 1)  # attention can reach token t + 1 in this step
        if ready and self.version != self.encoded:
            self.version = self.encoded  # the memory grew since the engine last copied it
        return ready

    def window(self) -> tuple[int, int, int]:
        n, width = self.size, self.width
        if width is None or n <= width:
            return 0, n, n
        lo = min(max(int(self.inputs["alignment"].argmax()) - width // 2, 0), n - width)
        return lo, lo + width, n - lo

    def advance(self, outputs: dict[str, np.ndarray], lo: int) -> bool:
        alignment = outputs["alignment_out"]
        if len(alignment) != self.size:  # a window: the rest of the alignment is dropped (see AttentionDecoder._step)
            whole = np.zeros(self.size, np.float32)
            whole[lo:lo + len(alignment)] = alignment
            alignment = whole
        mel = outputs["mel"]
        self.inputs["prev_mel"], self.inputs["state"], self.inputs["alignment"] = mel, outputs["state_out"], alignment
        self.mels.append(mel)
        self.aligns.append(alignment)
        self.t += 1
        stop = float(outputs["stop_logit"][0]) > 0.0
        end = stop or self.t >= self.limit
        if self.mels and (len(self.mels) == self.step or end):
            self.emit({"mel": np.stack(self.mels), "alignment": np.stack(self.aligns)}, len(self.mels))
            self.mels, self.aligns = [], []
        self.guarded = end and not stop
        return end
