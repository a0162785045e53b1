"""The attention voice reads its text as it goes (issue 13): the AttentionDecoder starts on a prefix of the text's
tokens (a TokenStream, sentence by sentence, or a text that comes in pieces) and gives the frames of the whole
text, alone and in lockstep, at dynamic and fixed shapes, with pace, in one chunk, at bucket edges and past the
largest bucket, with the frame guard, and while a stream waits for its text the others go on."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from melstream.blocks import StreamablePipeline, TokenStream
from melstream.components.attention import AttentionDecoder
from melstream.text import Sentence

END_ID = 1
#: 1 token (the end alone), the synthetic voice's memory buckets' edges (8, 16, 32, 64) and past the largest
#: (fixed shapes then window the memory, following the attention)
LENGTHS = [1, 2, 8, 9, 16, 17, 33, 64, 65, 150]


def build(taco_addon: Any, *, fixed: bool = False, rows: int = 0, stack: list[Any] | None = None) -> StreamablePipeline:
    from melstream.runners.onnx import OnnxRuntimeRunner

    return taco_addon.build(OnnxRuntimeRunner(fixed_shapes=fixed, lockstep_rows=rows), stack=stack)


def decoder(pipeline: StreamablePipeline) -> AttentionDecoder:
    block = pipeline.streamable_block
    assert isinstance(block, AttentionDecoder)
    return block


def text_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` tokens: ``n - 1`` symbols, then the end id."""
    return np.concatenate([rng.integers(3, 30, n - 1), [END_ID]]).astype(np.int64)


def sentences(ids: np.ndarray, rng: np.random.Generator) -> list[Sentence]:
    """``ids`` (without its end id) cut into sentences of 0 to 20 tokens."""
    body, out, a = ids[:-1], [], 0
    while a < len(body) or not out:
        b = min(a + int(rng.integers(0, 21)), len(body))
        out.append(Sentence(text="", ids=body[a:b], words=()))
        a = b
    return out


def run(pipeline: StreamablePipeline, tokens: Any, **options: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """The frames (``mel``) and each chunk's ``alignment``."""
    context: dict[str, Any] = {"tokens": tokens}
    if "pace" in options:
        context["pace"] = np.asarray(options["pace"], np.float32)
    if "chunk_frames" in options:
        context["chunk_frames"] = np.asarray(options["chunk_frames"], np.int64)
    chunks = list(pipeline.generate(context))
    mel = np.concatenate([c["mel"] for c in chunks]) if chunks else np.zeros((0, 80), np.float32)
    return mel, [c["alignment"] for c in chunks]


def assert_same(whole: tuple[np.ndarray, list[np.ndarray]], lazy: tuple[np.ndarray, list[np.ndarray]], n: int,
                what: str) -> None:
    (mel_w, align_w), (mel_l, align_l) = whole, lazy
    assert len(mel_l) == len(mel_w) > 0, f"{what}: {len(mel_l)} frames, whole text {len(mel_w)}"
    np.testing.assert_allclose(mel_l, mel_w, atol=1e-4, err_msg=what)
    assert [len(a) for a in align_l] == [len(a) for a in align_w], what  # the same chunks
    assert all(a.shape[1] == n for a in align_w)
    widths = [a.shape[1] for a in align_l]
    assert widths == sorted(widths) and widths[-1] == n and widths[0] >= 1, f"{what}: widths {widths}"
    # every column is a token of the whole text: widened to N, the alignment is the whole text's
    rows = np.concatenate([np.pad(a, ((0, 0), (0, n - a.shape[1]))) for a in align_l])
    np.testing.assert_allclose(rows, np.concatenate(align_w), atol=1e-5, err_msg=what)
    assert np.array_equal(rows.argmax(axis=1), np.concatenate(align_w).argmax(axis=1)), what


def test_the_attention_voice_reads_its_text_lazily(taco_addon):
    assert taco_addon.build().reads_text_lazily


@pytest.mark.parametrize("mode", ["alone", "fixed", "lockstep", "lockstep-fixed"])
def test_lazy_equals_whole(taco_addon, mode):
    pipeline = build(taco_addon, fixed="fixed" in mode, rows=4 if "lockstep" in mode else 0)
    rng = np.random.default_rng(13)
    for n in LENGTHS:
        ids = text_ids(rng, n)
        whole = run(pipeline, ids)
        lazy = run(pipeline, TokenStream(sentences(ids, rng), END_ID))
        assert_same(whole, lazy, n, f"{mode}, {n} tokens")


@pytest.mark.parametrize("mode", ["alone", "fixed", "lockstep"])
@pytest.mark.parametrize("options", [{"pace": 1.6}, {"pace": 0.7, "chunk_frames": 5}, {"chunk_frames": 0},
                                     {"chunk_frames": 1}, {"pace": 1.3, "chunk_frames": 0}], ids=str)
def test_lazy_equals_whole_with_options(taco_addon, mode, options):
    pipeline = build(taco_addon, fixed=mode == "fixed", rows=4 if mode == "lockstep" else 0)
    rng = np.random.default_rng(21)
    for n in (9, 70):
        ids = text_ids(rng, n)
        assert_same(run(pipeline, ids, **options), run(pipeline, TokenStream(sentences(ids, rng), END_ID), **options),
                    n, f"{mode} {options}, {n} tokens")


def test_one_chunk_of_the_whole_utterance_has_every_token(taco_addon):
    pipeline = build(taco_addon)
    ids = text_ids(np.random.default_rng(2), 40)
    mel, aligns = run(pipeline, TokenStream(sentences(ids, np.random.default_rng(3)), END_ID), chunk_frames=0)
    assert len(aligns) == 1 and aligns[0].shape == (len(mel), 40)


@pytest.mark.parametrize("mode", ["alone", "fixed", "lockstep"])
def test_the_frame_guard_grows_with_the_text_to_the_whole_texts(taco_addon, mode):
    """One frame a token is far too few for this voice: every utterance ends at the guard, ``N`` frames, after
    reading the rest of the text at each ``known`` frames."""
    stack = [{"type": "AttentionDecoder", "encoder": {"type": "Encoders"}, "chunk_frames": 8, "max_frames_per_token": 1}]
    pipeline = build(taco_addon, fixed=mode == "fixed", rows=4 if mode == "lockstep" else 0, stack=stack)
    rng = np.random.default_rng(4)
    for n in (5, 40, 90):
        ids = text_ids(rng, n)
        before = decoder(pipeline).guard_hits
        whole = run(pipeline, ids)
        lazy = run(pipeline, TokenStream(sentences(ids, rng), END_ID))
        assert len(whole[0]) == n and decoder(pipeline).guard_hits == before + 2
        assert_same(whole, lazy, n, f"{mode}, {n} tokens")


def test_the_first_chunk_reads_a_prefix_of_the_text(taco_addon):
    ids = text_ids(np.random.default_rng(8), 400)
    read: list[int] = []

    def counted() -> Iterator[Sentence]:
        for sentence in sentences(ids, np.random.default_rng(9)):
            read.append(len(sentence.ids))
            yield sentence

    for rows in (0, 4):
        read.clear()
        chunks = build(taco_addon, rows=rows).generate({"tokens": TokenStream(counted(), END_ID)})
        next(chunks)
        # the first segment (16 tokens) and the encoder's context (2): a sentence or two more at most
        assert sum(read[:-1]) < 16 + 2 and sum(read) < 60, read
        chunks.close()


class Gate:
    """A text's sentences handed on one at a time, as the test lets them through (a text written as it is read)."""

    def __init__(self, items: list[Sentence]) -> None:
        self.items = items
        self.allowed = 0
        self.taken = 0
        self.cond = threading.Condition()

    def allow(self, count: int) -> None:
        with self.cond:
            self.allowed = min(self.allowed + count, len(self.items))
            self.cond.notify_all()

    def __iter__(self) -> Iterator[Sentence]:
        for i, item in enumerate(self.items):
            with self.cond:
                if not self.cond.wait_for(lambda i=i: self.allowed > i, 30):
                    raise TimeoutError("the test never let the next sentence through")
                self.taken = i + 1
            yield item


def consume(pipeline: StreamablePipeline, tokens: Any, got: list[Any], arrived: list[float]) -> threading.Thread:
    def go() -> None:
        try:
            for chunk in pipeline.generate({"tokens": tokens}):
                got.append(chunk)
                arrived.append(time.monotonic())
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            got.append(e)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def wait_for(check: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("mode", ["alone", "fixed", "lockstep"])
def test_a_text_in_pieces_speaks_before_its_end_and_equals_the_whole(taco_addon, mode):
    pipeline = build(taco_addon, fixed=mode == "fixed", rows=4 if mode == "lockstep" else 0)
    rng = np.random.default_rng(17)
    ids = text_ids(rng, 300)
    parts = sentences(ids, rng)
    gate = Gate(parts)
    got: list[Any] = []
    thread = consume(pipeline, TokenStream(gate, END_ID), got, [])
    gate.allow(4)
    assert wait_for(lambda: len(got) > 0), "no audio from the first sentences"
    time.sleep(0.2)  # it waits for the text: every chunk it could make has been handed on, and no more come
    held = len(got)
    time.sleep(0.1)
    assert len(got) == held and gate.taken <= 5 and thread.is_alive()
    gate.allow(len(parts))
    thread.join(60)
    assert not thread.is_alive() and not any(isinstance(c, BaseException) for c in got), got[-1:]
    lazy = (np.concatenate([c["mel"] for c in got]), [c["alignment"] for c in got])
    assert_same(run(pipeline, ids), lazy, len(ids), mode)


def test_in_lockstep_a_stream_waiting_for_text_does_not_hold_up_the_others(taco_addon):
    pipeline = build(taco_addon, rows=4)
    rng = np.random.default_rng(23)
    ids = [text_ids(rng, n) for n in (120, 60, 45)]
    gate = Gate(sentences(ids[0], rng))
    waiting_got: list[Any] = []
    waiter = consume(pipeline, TokenStream(gate, END_ID), waiting_got, [])
    gate.allow(2)
    assert wait_for(lambda: len(waiting_got) > 0)
    others = [([], []) for _ in ids[1:]]
    threads = [consume(pipeline, tokens, got, at) for tokens, (got, at) in zip(ids[1:], others, strict=True)]
    for t in threads:
        t.join(60)
    # the others finished while the first still waits for its text (the engine stepped them without it)
    assert not any(t.is_alive() for t in threads) and waiter.is_alive()
    for tokens, (got, _) in zip(ids[1:], others, strict=True):
        assert_same(run(pipeline, tokens), (np.concatenate([c["mel"] for c in got]), [c["alignment"] for c in got]),
                    len(tokens), "a stream beside the waiting one")
    gate.allow(10_000)
    waiter.join(60)
    assert not waiter.is_alive()
    lazy = (np.concatenate([c["mel"] for c in waiting_got]), [c["alignment"] for c in waiting_got])
    assert_same(run(pipeline, ids[0]), lazy, len(ids[0]), "the stream that waited")
    engine = decoder(pipeline)._lockstep  # noqa: SLF001 - the block's engine: nothing left in it
    assert engine is not None and engine.active == 0


def test_a_stream_closed_while_it_waits_for_text_leaves_the_engine(taco_addon):
    pipeline = build(taco_addon, rows=4)
    rng = np.random.default_rng(29)
    ids = text_ids(rng, 80)
    parts = sentences(ids, rng)
    source: queue.Queue[Sentence | None] = queue.Queue()
    for part in parts[:2]:
        source.put(part)

    def pieces() -> Iterator[Sentence]:
        while (item := source.get(timeout=30)) is not None:
            yield item

    chunks = pipeline.generate({"tokens": TokenStream(pieces(), END_ID)})
    next(chunks)
    engine = decoder(pipeline)._lockstep  # noqa: SLF001
    assert engine is not None and engine.active == 1
    closer = threading.Thread(target=chunks.close)
    source.put(None)  # the text ends: the stream's thread, if it waits, reads on; then it is closed
    closer.start()
    closer.join(30)
    assert not closer.is_alive()
    assert wait_for(lambda: engine.active == 0)


def test_lazy_text_through_the_root_pipeline_equals_the_whole_text(taco_addon, monkeypatch):
    pipeline = taco_addon.build()
    text = " ".join(f"Sentence number {i} is here." for i in range(1, 9))
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    whole = pipeline.synthesize(text, pace=1.2)
    monkeypatch.setattr(StreamablePipeline, "lazy_text", True)
    lazy = pipeline.synthesize(text, pace=1.2)
    assert lazy.shape == whole.shape
    np.testing.assert_allclose(lazy, whole, atol=1e-4)
