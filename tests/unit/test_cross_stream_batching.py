"""melstream.runners.batching: concurrent calls to one network run as one padded batch, and every caller gets
exactly its own rows (issue 11).

The network here is numpy (the masked moving sum of tests/unit/test_fixed_shapes.py, any size); then the
synthetic voices run several streams at once in threads, batched, against each stream run alone.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from melstream.runners.base import Network
from melstream.runners.batching import Batcher, BatchPolicy
from melstream_client.spec import NetworkSpec, TensorSpec

from .test_fixed_shapes import inputs, reference, spec

WAIT_S = 10.0


class Recording:
    """The masked moving sum at any size and batch; records each call's batch; raises on a row holding NaN."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, gain, length = feed["x"], feed["gain"], feed["length"]
        if np.isnan(x).any():
            raise ValueError("NaN in x")
        with self.lock:
            self.batches.append(len(x))
        mask = (np.arange(x.shape[1])[None, :] < length)[:, :, None]
        return {"y": (reference(x * mask, gain) * mask).astype(np.float32)}


def run_together(call: Any, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
    """Each feed called from its own thread, all released at once; each thread's result or exception."""
    results: list[Any] = [None] * len(feeds)
    start = threading.Barrier(len(feeds))

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = call(feeds[i])
        except Exception as e:  # noqa: BLE001 - the test looks at it
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), "a caller never got its rows back"
    return results


def handle(net: Any, policy: BatchPolicy, **options: Any) -> Network:
    s = spec(**options)
    return Network(s, Batcher(s, net, policy), where="test")


def test_concurrent_calls_of_different_sizes_batch_and_each_gets_its_own_rows() -> None:
    net = Recording()
    sizes = [1, 5, 8, 9, 17, 3]
    feeds = [inputs(n) for n in sizes]
    results = run_together(handle(net, BatchPolicy(max_wait_s=1.0, max_batch=64, expected=lambda: len(sizes))), feeds)
    for n, feed, out in zip(sizes, feeds, results, strict=True):
        assert out["y"].shape == (1, n, 2)
        np.testing.assert_allclose(out["y"], reference(feed["x"], feed["gain"]), atol=1e-5, err_msg=f"size {n}")
    assert net.batches == [len(sizes)]  # all six in one call: the expected callers arrived, no timeout needed


def test_a_batch_holds_at_most_max_batch_rows() -> None:
    net = Recording()
    feeds = [inputs(4, seed=i) for i in range(7)]
    results = run_together(handle(net, BatchPolicy(max_wait_s=1.0, max_batch=3, expected=lambda: 7)), feeds)
    for feed, out in zip(feeds, results, strict=True):
        np.testing.assert_allclose(out["y"], reference(feed["x"], feed["gain"]), atol=1e-5)
    assert max(net.batches) <= 3 and sum(net.batches) == 7


def test_a_caller_alone_runs_at_once() -> None:
    net = Recording()
    call = handle(net, BatchPolicy(max_wait_s=30.0, max_batch=64, expected=lambda: 1))
    for n in (1, 16, 40):  # were it to wait for company, this would take 30 s a call
        np.testing.assert_allclose(call(inputs(n))["y"], reference(inputs(n)["x"], inputs(n)["gain"]), atol=1e-5)
    assert net.batches == [1, 1, 1]


def test_an_error_in_one_call_leaves_the_others_rows_untouched() -> None:
    net = Recording()
    feeds = [inputs(n) for n in (3, 6, 9)]
    feeds[1]["x"][0, 2, 0] = np.nan
    results = run_together(handle(net, BatchPolicy(max_wait_s=1.0, max_batch=64, expected=lambda: 3)), feeds)
    assert isinstance(results[1], Exception) and "NaN in x" in str(results[1])
    for i in (0, 2):
        np.testing.assert_allclose(results[i]["y"], reference(feeds[i]["x"], feeds[i]["gain"]), atol=1e-5)


def test_without_a_length_input_only_equal_sizes_share_a_call() -> None:
    def unmasked(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feed["x"].shape[:2])
        return {"y": reference(feed["x"], feed["gain"]).astype(np.float32)}

    calls: list[tuple[int, ...]] = []
    s = NetworkSpec(name="conv", file="c.onnx", role="decoder",
                    inputs=(TensorSpec("x", "float32", (-1, 2)), TensorSpec("gain", "float32", (1,))),
                    outputs=(TensorSpec("y", "float32", (-1, 2)),))
    feeds = [inputs(n, seed=i) for i, n in enumerate((4, 4, 7))]
    results = run_together(Network(s, Batcher(s, unmasked, BatchPolicy(max_wait_s=1.0, expected=lambda: 3)), where="test"), feeds)
    for feed, out in zip(feeds, results, strict=True):
        np.testing.assert_allclose(out["y"], reference(feed["x"], feed["gain"]), atol=1e-5)
    assert sorted(calls) == [(1, 7), (2, 4)]


def test_staggered_callers_over_many_rounds_stay_exact() -> None:
    """Streams that join and leave at different times, each calling once per round (as attention steps do)."""
    net = Recording()
    active = {"n": 0}
    lock = threading.Lock()
    # a wait long enough that a loaded machine's scheduling does not keep every round alone (a call stops waiting
    # as soon as every active stream's call is in, so the test stays fast)
    call = handle(net, BatchPolicy(max_wait_s=0.05, max_batch=8, expected=lambda: active["n"]))
    errors: list[str] = []

    def stream(k: int) -> None:
        with lock:
            active["n"] += 1
        try:
            for r in range(5 + 3 * k):
                feed = inputs(1 + (k * 7 + r) % 20, seed=100 * k + r)
                out = call(feed)["y"]
                if not np.allclose(out, reference(feed["x"], feed["gain"]), atol=1e-5):
                    errors.append(f"stream {k} round {r}")
        finally:
            with lock:
                active["n"] -= 1

    threads = []
    for k in range(6):
        threads.append(threading.Thread(target=stream, args=(k,)))
        threads[-1].start()
        if k % 2:
            threads[0].join(0.001)  # stagger
    for t in threads:
        t.join(WAIT_S)
    assert not errors and not any(t.is_alive() for t in threads)
    assert max(net.batches) > 1  # some rounds did share a call


def test_fixed_shapes_and_batching_compose() -> None:
    """Under a fixed-shape handle each call is padded to its bucket; the batch pads to the largest bucket in it."""
    from .test_fixed_shapes import BUCKETS, Compiled

    net = Compiled()
    s = spec()
    fixed = Network(s, Batcher(s, net, BatchPolicy(max_wait_s=1.0, expected=lambda: 4)), where="test", fixed=True)
    sizes = [3, 9, 16, 30]
    feeds = [inputs(n) for n in sizes]
    for feed, out in zip(feeds, run_together(fixed, feeds), strict=True):
        np.testing.assert_allclose(out["y"], reference(feed["x"], feed["gain"]), atol=1e-5)
    assert set(net.sizes) <= set(BUCKETS)


# --- the synthetic voices: several streams at once, batched, against each alone ---------------------------------

def frames(pipeline: Any, tokens: np.ndarray, *, stop_after: int | None = None) -> np.ndarray:
    chunks = []
    gen = pipeline.generate({"tokens": tokens})
    for chunk in gen:
        if len(chunk["mel"]):
            chunks.append(chunk["mel"])
        if stop_after is not None and len(chunks) >= stop_after:
            gen.close()  # a listener gone mid-stream: its generator closed between calls
            break
    return np.concatenate(chunks) if chunks else np.zeros((0, pipeline.n_mels), np.float32)


@pytest.mark.parametrize("voice", ["fast_addon", "taco_addon"])
@pytest.mark.parametrize("fixed", [False, True], ids=["dynamic", "fixed"])
def test_synthetic_voices_batched_across_streams_equal_each_alone(voice: str, fixed: bool, request: pytest.FixtureRequest) -> None:
    from melstream.runners.onnx import OnnxRuntimeRunner

    addon = request.getfixturevalue(voice)
    alone = addon.build(OnnxRuntimeRunner(fixed_shapes=fixed))
    rng = np.random.default_rng(3)
    texts = [rng.integers(3, 30, n).astype(np.int64) for n in (1, 5, 17, 33, 60, 9)]
    active = {"n": len(texts)}  # every stream counts from the start: the first calls wait for each other
    lock = threading.Lock()
    seen: list[tuple[str, int]] = []
    # a generous wait: a leader waits only until every active stream's call is in (streams leave as they end)
    policy = BatchPolicy(max_wait_s=0.05, max_batch=16, expected=lambda: active["n"],
                         on_batch=lambda network, calls, rows: seen.append((network, calls)))
    together = addon.build(OnnxRuntimeRunner(fixed_shapes=fixed, batching=policy))
    expected = [frames(alone, t) for t in texts]
    results: list[Any] = [None] * len(texts)
    cancelled = 2  # this stream's listener leaves after its first chunk

    def stream(i: int) -> None:
        try:
            results[i] = frames(together, texts[i], stop_after=1 if i == cancelled else None)
        finally:
            with lock:
                active["n"] -= 1

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(texts))]
    for t in threads:  # streams of different lengths: they leave at different times, the others batch on
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    for i, (want, got) in enumerate(zip(expected, results, strict=True)):
        if i == cancelled:
            np.testing.assert_allclose(got, want[:len(got)], atol=1e-4)
            continue
        assert len(got) == len(want), (voice, i)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{voice} stream {i}")
    shared = {network for network, calls in seen if calls > 1}
    assert shared, f"{voice}: no call was shared by two streams ({len(seen)} calls)"
