"""tacovoice, the shipped attention voice, reads its text as it goes (issue 13): sentence by sentence, its frames
and alignments equal the whole text's in-process (alone, at fixed shapes with the window past the largest bucket,
in lockstep; with pace, in one chunk), and through a served ``cpu`` Triton (lockstep, networks in the voice),
one stream at a time and several at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melstream.addon import Addon, load_addon
from melstream.blocks import StreamablePipeline, TokenStream
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream.serving.server import TritonServer
from melstream_client import Client
from tests.integration.test_sentences_espeak import COMMAS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays 12 songs."
TEXTS = [
    "Hi.",
    "Thanks for calling. Your order shipped this morning, and it should arrive on Thursday. Is that all?",
    " ".join([SENTENCE] * 9),  # about 570 tokens: past the largest bucket (512), so fixed shapes window the memory
    COMMAS,  # one long sentence, read a few commas at a time
]


@pytest.fixture(scope="module")
def addon() -> Addon:
    return load_addon(ROOT / "addons" / "tacovoice")


def run(pipeline: StreamablePipeline, context: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    chunks = list(pipeline.generate(context))
    return np.concatenate([c["mel"] for c in chunks]), [c["alignment"] for c in chunks]


def assert_same(whole: tuple[np.ndarray, list[np.ndarray]], lazy: tuple[np.ndarray, list[np.ndarray]], what: str) -> None:
    (mel_w, align_w), (mel_l, align_l) = whole, lazy
    n = align_w[0].shape[1]
    assert len(mel_l) == len(mel_w), f"{what}: {len(mel_l)} frames, whole text {len(mel_w)}"
    np.testing.assert_allclose(mel_l, mel_w, atol=1e-3, err_msg=what)
    widths = [a.shape[1] for a in align_l]
    assert widths == sorted(widths) and widths[-1] == n, what
    rows = np.concatenate([np.pad(a, ((0, 0), (0, n - a.shape[1]))) for a in align_l])
    np.testing.assert_allclose(rows, np.concatenate(align_w), atol=1e-5, err_msg=what)
    assert np.array_equal(rows.argmax(axis=1), np.concatenate(align_w).argmax(axis=1)), what


@pytest.mark.parametrize("mode", ["alone", "fixed", "lockstep"])
def test_sentence_by_sentence_equals_the_whole_text_in_process(addon: Addon, mode: str) -> None:
    pipeline = addon.build(OnnxRuntimeRunner(fixed_shapes=mode == "fixed", lockstep_rows=8 if mode == "lockstep" else 0))
    assert pipeline.reads_text_lazily
    for text in TEXTS:
        lazy_context = pipeline.lazy_inputs_for(text)
        assert isinstance(lazy_context["tokens"], TokenStream)
        assert_same(run(pipeline, pipeline.inputs_for(text)), run(pipeline, lazy_context), f"{mode}: {text[:30]}")
    for options in ({"pace": 1.4}, {"chunk_frames": 0}):
        text = TEXTS[1]
        assert_same(run(pipeline, pipeline.inputs_for(text, **options)), run(pipeline, pipeline.lazy_inputs_for(text, **options)),
                    f"{mode} {options}")


def test_served_cpu_frames_equal_the_whole_text_in_process(server: TritonServer, addon: Addon) -> None:
    """The committed repository (the ``cpu`` profile: lockstep rows, networks in the voice) speaks sentence by
    sentence; one stream at a time and five at once, each equals the in-process whole-text frames."""
    reference = addon.build(OnnxRuntimeRunner())
    want = {text: run(reference, reference.inputs_for(text))[0] for text in TEXTS}
    with Client(server.grpc_url, timeout_s=120) as client:
        for text in TEXTS:
            got = client.synthesize(text, voice="tacovoice")
            assert got.shape == want[text].shape, text[:30]
            np.testing.assert_allclose(got, want[text], atol=1e-3, err_msg=text[:30])
    jobs = [TEXTS[i % len(TEXTS)] for i in range(5)]
    results: list[Any] = [None] * len(jobs)

    def stream(i: int) -> None:
        with Client(server.grpc_url, timeout_s=120) as c:
            results[i] = c.synthesize(jobs[i], voice="tacovoice")

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
        t.join(0.03)  # staggered starts (a bounded join, not a wait for anything)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads)
    for i, text in enumerate(jobs):
        assert results[i].shape == want[text].shape, (i, text[:30])
        np.testing.assert_allclose(results[i], want[text], atol=1e-3, err_msg=f"stream {i}")
