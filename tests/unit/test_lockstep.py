"""melstream.runners.lockstep: every stream's attention advanced in one call per step, each stream getting exactly
the frames it gets alone (issue 11: exactness and listener-first scheduling).

First the engine with a toy recurrence in numpy (a masked running sum whose rows must not mix), then the
synthetic attention voice (tacovoice's stack, toy sizes): streams of different lengths joining and leaving at
staggered times, a cancellation mid-stream, an error in one stream, and texts longer than the largest bucket
at fixed shapes (the window that follows the attention).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from melstream.errors import SynthesisError
from melstream.runners.base import Network
from melstream.runners.lockstep import END, Lockstep, Recurrence
from melstream_client.spec import NetworkSpec, TensorSpec

WAIT_S = 20.0

SPEC = NetworkSpec(name="accum", file="a.onnx", role="decoder", max_batch_size=8,
                   inputs=(TensorSpec("acc", "float32", (2,)), TensorSpec("seq", "float32", (-1,))),
                   outputs=(TensorSpec("acc_out", "float32", (2,)), TensorSpec("echo", "float32", (-1,))),
                   length=TensorSpec("length", "int64", (1,)))


class Toy:
    """A step network in numpy: ``acc_out = acc + [sum(seq[:length]), length]``, ``echo = seq`` masked past length
    (so padding that leaked into a row would show); raises on a row holding NaN; records each call's rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seq, length = feed["seq"], feed["length"]
        if np.isnan(seq).any():
            raise ValueError("NaN in seq")
        with self.lock:
            self.calls.append(len(seq))
        mask = np.arange(seq.shape[1])[None, :] < length
        total = (seq * mask).sum(axis=1)
        acc_out = feed["acc"] + np.stack([total, length[:, 0].astype(np.float32)], axis=1)
        return {"acc_out": acc_out.astype(np.float32), "echo": (seq * mask).astype(np.float32)}


class Row(Recurrence):
    """``steps`` steps of the toy over ``seq``; a chunk per ``chunk`` steps holding the accumulator."""

    def __init__(self, seq: np.ndarray, steps: int, chunk: int = 2) -> None:
        super().__init__({"acc": np.zeros(2, np.float32), "seq": seq}, len(seq), frame_s=0.01)
        self.steps, self.chunk, self.t = steps, chunk, 0
        self.pending: list[np.ndarray] = []

    def advance(self, outputs: dict[str, np.ndarray], lo: int) -> bool:
        assert outputs["echo"].shape == (self.size,)
        np.testing.assert_array_equal(outputs["echo"], self.inputs["seq"])  # its own row, cropped back
        self.inputs["acc"] = outputs["acc_out"]
        self.pending.append(outputs["acc_out"].copy())
        self.t += 1
        if len(self.pending) == self.chunk or self.t == self.steps:
            self.emit({"acc": np.stack(self.pending)}, len(self.pending))
            self.pending = []
        return self.t == self.steps


def expected(seq: np.ndarray, steps: int) -> np.ndarray:
    return np.stack([[seq.sum() * (t + 1), len(seq) * (t + 1)] for t in range(steps)]).astype(np.float32)


def collect(row: Row) -> np.ndarray | BaseException:
    out = []
    while True:
        item = row.chunks.get(timeout=WAIT_S)
        if item is END:
            return np.concatenate(out) if out else np.zeros((0, 2), np.float32)
        if isinstance(item, BaseException):
            return item
        out.append(item["acc"])


def engine(toy: Toy, **options: Any) -> Lockstep:
    return Lockstep(Network(SPEC, toy, where="test"), context=("seq",), **options)


def test_rows_of_different_sizes_step_together_and_each_gets_its_own() -> None:
    toy = Toy()
    eng = engine(toy)
    rng = np.random.default_rng(0)
    sizes = [1, 7, 8, 9, 30]
    rows = [Row(rng.standard_normal(n).astype(np.float32), steps=6) for n in sizes]
    for r in rows:
        eng.add(r)
    for n, r in zip(sizes, rows, strict=True):
        got = collect(r)
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, expected(r.inputs["seq"], 6), rtol=1e-5, err_msg=f"size {n}")
    assert max(toy.calls) > 1 and eng.active == 0


def test_more_ready_rows_than_a_call_holds_run_in_several_calls_per_step() -> None:
    toy = Toy()
    eng = engine(toy, max_rows=3)
    rows = [Row(np.full(4, float(i), np.float32), steps=4) for i in range(7)]
    for r in rows:
        eng.add(r)
    for r in rows:
        np.testing.assert_allclose(collect(r), expected(r.inputs["seq"], 4))
    assert max(toy.calls) <= 3 and sum(toy.calls) == 7 * 4


def test_an_error_in_one_row_ends_that_stream_only() -> None:
    toy = Toy()
    eng = engine(toy)
    seqs = [np.ones(3, np.float32), np.array([1.0, np.nan, 2.0], np.float32), np.arange(5, dtype=np.float32)]
    rows = [Row(s, steps=5) for s in seqs]
    for r in rows:
        eng.add(r)
    results = [collect(r) for r in rows]
    assert isinstance(results[1], SynthesisError) and "NaN in seq" in str(results[1])
    for i in (0, 2):
        np.testing.assert_allclose(results[i], expected(seqs[i], 5))


def test_a_row_removed_mid_stream_is_dropped_and_the_others_go_on() -> None:
    toy = Toy()
    eng = engine(toy)
    gone = Row(np.ones(4, np.float32), steps=10_000, chunk=1)
    stay = Row(np.arange(6, dtype=np.float32), steps=300)
    eng.add(gone)
    eng.add(stay)
    assert not isinstance(gone.chunks.get(timeout=WAIT_S), BaseException)
    eng.remove(gone)  # the listener left: its stream's generator closed
    np.testing.assert_allclose(collect(stay), expected(stay.inputs["seq"], 300), rtol=1e-5)
    assert eng.active == 0 and gone.t < 10_000


def test_rows_join_and_leave_at_staggered_times() -> None:
    toy = Toy()
    eng = engine(toy, max_rows=4)
    rng = np.random.default_rng(1)
    results: dict[int, Any] = {}
    rows = {k: Row(rng.standard_normal(1 + (7 * k) % 19).astype(np.float32), steps=3 + 5 * k) for k in range(8)}

    def stream(k: int) -> None:
        time.sleep(0.002 * k)  # staggered arrivals, not a wait for anything
        eng.add(rows[k])
        results[k] = collect(rows[k])

    threads = [threading.Thread(target=stream, args=(k,)) for k in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads)
    for k, r in rows.items():
        np.testing.assert_allclose(results[k], expected(r.inputs["seq"], r.steps), rtol=1e-5, err_msg=f"row {k}")


class Gated(Row):
    """A row that can take a step only while ``open`` is set (a stream whose context is not filled yet)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open = threading.Event()

    def ready(self) -> bool:
        return self.open.is_set()


def test_listener_first_a_row_far_ahead_sits_out_while_a_new_stream_waits_for_its_first_chunk() -> None:
    toy = Toy()
    eng = engine(toy, ahead_s=1.0)
    ahead = Row(np.ones(3, np.float32), steps=1_000_000, chunk=1)
    ahead.first_sent = time.monotonic()
    ahead.frames_sent = 10_000  # 100 s of audio sent: its listener will not run dry for a long while
    new = Gated(np.ones(5, np.float32), steps=6, chunk=6)
    seen: list[int] = []  # how far the stream ahead had got at each of the new stream's steps
    advance = new.advance
    new.advance = lambda outputs, lo: seen.append(ahead.t) or advance(outputs, lo)  # type: ignore[method-assign]
    eng.add(ahead)
    eng.add(new)
    while ahead.t < 3:  # the stream far ahead steps alone while the new one is not ready
        ahead.chunks.get(timeout=WAIT_S)
    new.open.set()
    eng.wake()
    got = collect(new)
    eng.remove(ahead)
    np.testing.assert_allclose(got, expected(new.inputs["seq"], 6))
    # while the new stream made its first chunk the one far ahead sat out (one step of its may share the first)
    assert len(seen) == 6 and seen[-1] - seen[0] <= 1, seen


def test_listener_first_a_row_far_ahead_sits_out_while_another_is_about_to_run_dry() -> None:
    """Not only a first chunk: a stream whose chunk is due within urgent_s (a second chunk, with 93 ms of audio sent)
    makes a stream far ahead sit out; when nobody is urgent, every ready row steps (the engine keeps working)."""
    toy = Toy()
    eng = engine(toy, ahead_s=1.0, urgent_s=0.5)
    ahead = Row(np.ones(3, np.float32), steps=1_000_000, chunk=1)
    ahead.first_sent = time.monotonic()
    ahead.frames_sent = 10_000  # 100 s of audio sent
    dry = Gated(np.ones(5, np.float32), steps=6, chunk=6)
    dry.first_sent = time.monotonic()
    dry.frames_sent = 10  # 0.1 s sent: due within urgent_s
    calm = Gated(np.ones(4, np.float32), steps=6, chunk=6)
    calm.first_sent = time.monotonic()
    calm.frames_sent = 150  # 1.5 s sent: not urgent, and not far ahead either (within ahead_s + ... of its deadline)
    seen: list[int] = []
    advance = dry.advance
    dry.advance = lambda outputs, lo: seen.append(ahead.t) or advance(outputs, lo)  # type: ignore[method-assign]
    eng.add(ahead)
    while ahead.t < 3:  # alone and nobody urgent: it steps
        ahead.chunks.get(timeout=WAIT_S)
    eng.add(dry)
    dry.open.set()
    eng.wake()
    got = collect(dry)
    np.testing.assert_allclose(got, expected(dry.inputs["seq"], 6))
    assert len(seen) == 6 and seen[-1] - seen[0] <= 1, seen  # it sat out while the urgent one made its chunk
    eng.add(calm)
    calm.open.set()
    eng.wake()
    before = ahead.t
    np.testing.assert_allclose(collect(calm), expected(calm.inputs["seq"], 6))
    eng.remove(ahead)
    assert ahead.t - before >= 5  # nobody urgent: the one far ahead stepped along with the calm one


def test_rows_sit_out_until_ready_and_the_others_are_not_held_up() -> None:
    toy = Toy()
    eng = engine(toy)
    waiting = Gated(np.ones(2, np.float32), steps=3)
    going = Row(np.ones(4, np.float32), steps=20)
    eng.add(waiting)
    eng.add(going)
    np.testing.assert_allclose(collect(going), expected(going.inputs["seq"], 20))
    assert waiting.t == 0
    waiting.open.set()
    eng.wake()
    np.testing.assert_allclose(collect(waiting), expected(waiting.inputs["seq"], 3))


def test_a_network_handle_takes_a_batch_of_rows_with_their_lengths() -> None:
    net = Network(SPEC, Toy(), where="test")
    feed = {"acc": np.zeros((2, 2), np.float32), "seq": np.ones((2, 4), np.float32),
            "length": np.array([[4], [2]], np.int64)}
    out = net.run_rows(feed)
    np.testing.assert_allclose(out["acc_out"], [[4, 4], [2, 2]])
    with pytest.raises(SynthesisError, match=r"length input 'length' must be int64 of shape \[2, 1\]"):
        net.run_rows({**feed, "length": np.array([[4]], np.int64)})
    with pytest.raises(SynthesisError, match=r"input 'seq' has shape \(1, 4\), expected \[2, -1\]"):
        net.run_rows({**feed, "seq": np.ones((1, 4), np.float32)})


# --- the synthetic attention voice: lockstep against each stream alone -----------------------------------------

def attention(block: Any) -> Any:
    """The pipeline's AttentionDecoder block."""
    from melstream.components.attention import AttentionDecoder

    if isinstance(block, AttentionDecoder):
        return block
    found = [a for c in block.children() if c is not None and (a := attention(c)) is not None]
    return found[0] if found else None


def frames(pipeline: Any, tokens: np.ndarray, *, stop_after: int | None = None) -> np.ndarray:
    chunks = []
    gen = pipeline.generate({"tokens": tokens})
    for chunk in gen:
        chunks.append(chunk["mel"])
        if stop_after is not None and len(chunks) >= stop_after:
            gen.close()  # a listener gone mid-stream
            break
    return np.concatenate(chunks) if chunks else np.zeros((0, pipeline.n_mels), np.float32)


@pytest.mark.parametrize("fixed", [False, True], ids=["dynamic", "fixed"])
def test_attention_streams_in_lockstep_equal_each_alone(fixed: bool, taco_addon: Any) -> None:
    from melstream.runners.onnx import OnnxRuntimeRunner

    alone = taco_addon.build(OnnxRuntimeRunner(fixed_shapes=fixed))
    calls: list[int] = []
    runner = OnnxRuntimeRunner(fixed_shapes=fixed, lockstep_rows=4)
    runner.on_batch = lambda network, n, rows: calls.append(n)
    together = taco_addon.build(runner)
    rng = np.random.default_rng(5)
    # 1 token, a bucket's edges (8, 64, 65) and past the largest memory bucket (64): a window at fixed shapes
    lengths = [1, 7, 8, 9, 64, 65, 100, 23]
    texts = [rng.integers(3, 30, n).astype(np.int64) for n in lengths]
    want = [frames(alone, t) for t in texts]
    got: list[Any] = [None] * len(texts)
    cancelled = 3

    def stream(i: int) -> None:
        time.sleep(0.003 * i)  # staggered arrivals
        got[i] = frames(together, texts[i], stop_after=1 if i == cancelled else None)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if i == cancelled:
            np.testing.assert_allclose(g, w[:len(g)], atol=1e-4)
            continue
        assert len(g) == len(w), f"{lengths[i]} tokens: {len(g)} frames, alone {len(w)}"
        np.testing.assert_allclose(g, w, atol=1e-4, err_msg=f"{lengths[i]} tokens")
    assert max(calls) > 1 and max(calls) <= 4  # steps were shared, at most 4 rows a call
    engine_ = attention(together)._lockstep  # noqa: SLF001 - the block's engine: nothing left in it
    assert engine_ is not None and engine_.active == 0


def test_attention_lockstep_an_error_in_one_stream_leaves_the_others_frames_untouched(taco_addon: Any) -> None:
    from melstream.runners.onnx import OnnxRuntimeRunner

    alone = taco_addon.build(OnnxRuntimeRunner())
    runner = OnnxRuntimeRunner(lockstep_rows=8)
    together = taco_addon.build(runner)
    block = attention(together)
    real = block.network._direct  # noqa: SLF001 - inject a fault into one stream's rows, under the handle

    def faulty(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (feed["length"][:, 0] == 13).any():  # the stream of 13 tokens
            raise ValueError("broken row")
        return real(feed)

    block.network._direct = faulty  # noqa: SLF001
    rng = np.random.default_rng(9)
    texts = [rng.integers(3, 30, n).astype(np.int64) for n in (5, 13, 40)]
    want = [frames(alone, t) for t in texts]
    got: list[Any] = [None] * 3

    def stream(i: int) -> None:
        try:
            got[i] = frames(together, texts[i])
        except Exception as e:  # noqa: BLE001 - the test looks at it
            got[i] = e

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(got[1], SynthesisError) and "broken row" in str(got[1])
    for i in (0, 2):
        np.testing.assert_allclose(got[i], want[i], atol=1e-4)


def test_a_new_stream_never_gets_a_finished_streams_context() -> None:
    """The engine keeps a context tensor between steps while its rows stay the same; a stream that starts after
    another ended, of the same size and version, gets its own (the cache keys on a serial that no later
    recurrence reuses, as a freed object's id() could be)."""
    import gc

    toy = Toy()
    eng = engine(toy)
    for k in range(20):  # one row at a time, each of the same size and version, each with other values
        row = Row(np.full(4, float(k), np.float32), steps=2)
        eng.add(row)
        np.testing.assert_allclose(collect(row), expected(row.inputs["seq"], 2), err_msg=f"stream {k}")
        del row
        gc.collect()
