"""Word timestamps (issue 13, item 4): the WordClock's rules, and stream_outputs(words=True) on both synthetic voices.

The clock is checked against a plain frame-by-frame reading of the rules (``reference``) on random token
sequences and every way of cutting them into chunks; the voices against their own durations (the duration
voice: its predicted durations, at the request's pace) and their own attention (the attention voice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest

from melstream.blocks import StreamablePipeline, TokenStream
from melstream.components.upsampler import frame_counts
from melstream.words import WordClock, frame_tokens

FS = 256 / 22050


def reference(tokens: list[int], words: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The rules, frame by frame: ``(text, first frame, end frame)``."""
    running, out, frames = -1, [], []
    for t in tokens:
        running = max(running, t)
        frames.append(running)
    for text, a, b in words:
        inside = [j for j, t in enumerate(frames) if a <= t < b]
        if inside:
            out.append((text, inside[0], inside[-1] + 1))
        else:  # no frames: where the first frame of a later token is, else at the end
            later = [j for j, t in enumerate(frames) if t >= b]
            at = later[0] if later else len(frames)
            out.append((text, at, at))
    if out:
        text, a, _ = out[-1]
        out[-1] = (text, a, max(a, len(frames)))
    return out


def run_clock(tokens: list[int], words: list[tuple[str, int, int]], cuts: list[int]) -> list[list[tuple[str, float, float]]]:
    clock = WordClock(FS, words, final=True)
    per_chunk, at = [], 0
    for size in cuts:
        per_chunk.append(clock.feed(np.asarray(tokens[at:at + size], np.int64)))
        at += size
    per_chunk[-1] = per_chunk[-1] + clock.finish()
    return per_chunk


def cuttings(n: int, chunk: int) -> dict[str, list[int]]:
    def fixed(size: int) -> list[int]:
        return [min(size, n - a) for a in range(0, n, size)] or [0]

    return {"1": fixed(1), "chunk-1": fixed(max(chunk - 1, 1)), "chunk": fixed(chunk), "chunk+1": fixed(chunk + 1),
            "whole": [n]}


def random_case(rng: random.Random) -> tuple[list[int], list[tuple[str, int, int]]]:
    n_tokens = rng.randint(1, 30)
    words, t = [], 0
    while t < n_tokens:
        gap, length = rng.randint(0, 2), rng.randint(0, 4)
        a = min(t + gap, n_tokens)
        b = min(a + length, n_tokens)
        if b > a or rng.random() < 0.2:
            words.append((f"w{len(words)}", a, b))
        t = b + (1 if b == a else 0)
    frames = []
    for token in range(n_tokens):
        frames += [token] * rng.choice([0, 0, 1, 2, 3, 7])
    if rng.random() < 0.3:  # an attention that looks back a token now and then
        frames = [max(f - (rng.random() < 0.2), 0) for f in frames]
    return frames, words


@pytest.mark.parametrize("seed", range(60))
def test_clock_follows_the_rules_however_the_frames_are_cut(seed):
    rng = random.Random(seed)
    frames, words = random_case(rng)
    want = [(text, a * FS, b * FS) for text, a, b in reference(frames, words)]
    for name, cuts in cuttings(len(frames), rng.randint(2, 9)).items():
        per_chunk = run_clock(frames, words, cuts)
        got = [w for chunk in per_chunk for w in chunk]
        assert got == want, name
        check_rules(per_chunk, cuts, [w[0] for w in words], len(frames))


def check_rules(per_chunk, sizes, texts, total, frame_s=FS):
    """Every word once in order, monotonic, the last ending at the end of the audio (within a frame), and
    each word given in a chunk at or after the one its speech ends in."""
    got = [w for chunk in per_chunk for w in chunk]
    assert [w[0] for w in got] == texts
    previous = 0.0
    for _, start, end in got:
        assert previous - 1e-9 <= start <= end + 1e-9
        previous = end
    if got:
        assert abs(got[-1][2] - total * frame_s) <= frame_s + 1e-9
    elapsed = 0
    for words, size in zip(per_chunk, sizes, strict=True):
        elapsed += size
        for _, _, end in words:
            assert end <= elapsed * frame_s + 1e-9


def test_clock_edges():
    # no words
    clock = WordClock(FS, [], final=True)
    assert clock.feed(np.arange(5)) == [] and clock.finish() == []
    # one word: it ends at the end of the audio, after the text's closing tokens
    clock = WordClock(FS, [("one", 0, 2)], final=True)
    assert clock.feed(np.asarray([0, 0, 1, 2, 2])) == []
    assert clock.finish() == [("one", 0.0, 5 * FS)]
    # a word in 0 frames: start == end where the speech after it starts
    got = run_clock([0, 0, 3, 3, 4], [("a", 0, 1), ("b", 1, 3), ("c", 3, 4)], [5])[0]
    assert got == [("a", 0, 2 * FS), ("b", 2 * FS, 2 * FS),
                   ("c", 2 * FS, 5 * FS)]
    # no frames at all: every word at 0
    assert WordClock(FS, [("a", 0, 1)], final=True).finish() == [("a", 0.0, 0.0)]


def test_clock_holds_the_last_known_word_until_more_come():
    clock = WordClock(FS, [("a", 0, 1)])
    assert clock.feed(np.asarray([0, 0, 1])) == []  # "a" is over, but it may be the text's last word
    clock.add_words([("b", 2, 3)])
    assert clock.feed(np.asarray([2])) == [("a", 0.0, 2 * FS)]
    clock.add_words([], final=True)
    assert clock.finish() == [("b", 3 * FS, 4 * FS)]
    with pytest.raises(ValueError):
        WordClock(FS, [("a", 2, 3), ("b", 1, 2)])


def test_frame_tokens_from_alignment():
    alignment = np.asarray([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]], np.float32)
    assert frame_tokens({"alignment": alignment}).tolist() == [0, 1, 2]
    assert frame_tokens({"frame_tokens": np.asarray([4, 5])}).tolist() == [4, 5]
    assert frame_tokens({"mel": np.zeros((2, 3))}) is None


# ------------------------------------------------------------------------------------------ the voices

TEXTS = ["Hello.", "Hello there. How are you? I am fine!", "Dr. Smith paid $3.50 for 3.5 kg on the 21st. Mr. Jones did not.",
         " ".join(f"Sentence number {i} is here." for i in range(1, 9))]


def text_words(pipeline: StreamablePipeline, text: str) -> tuple[list[tuple[str, int, int]], np.ndarray]:
    stream = TokenStream(pipeline.frontend.sentences(text), pipeline.frontend.end_id)
    stream.all()
    return stream.words(), stream.known


def spoken(pipeline, text, **options):
    chunks = list(pipeline.stream_outputs(text, words=True, **options))
    return chunks, [c["words"] for c in chunks], [len(c["mel"]) for c in chunks]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("pace", [None, 0.5, 2.0])
@pytest.mark.parametrize("chunk_frames", [None, 0, 1, 5, 6, 7])
def test_fast_voice_words_follow_its_durations(fast_addon, text, pace, chunk_frames):
    pipeline = fast_addon.build()
    words, tokens = text_words(pipeline, text)
    chunks, per_chunk, sizes = spoken(pipeline, text, pace=pace, chunk_frames=chunk_frames)
    total = sum(sizes)
    check_rules(per_chunk, sizes, [w[0] for w in words], total, pipeline.frame_s)
    # the durations the voice predicts, at the request's pace: each frame's token, independently of the chunks
    segmented = pipeline.streamable_block.stack[0]
    durations = segmented.sequence_block({"tokens": tokens})["durations"]
    counts = frame_counts(durations, pace=pace or 1.0, max_frames_per_token=segmented.streamable_block.max_frames_per_token)
    assert counts.sum() == total
    fs = pipeline.frame_s
    want = [(t, a * fs, b * fs) for t, a, b in reference(np.repeat(np.arange(len(tokens)), counts).tolist(), words)]
    assert [w for c in per_chunk for w in c] == want
    # and the audio is the audio without words
    plain = list(pipeline.stream_outputs(text, pace=pace, chunk_frames=chunk_frames))
    assert len(plain) == len(chunks) and all(np.array_equal(p["mel"], c["mel"]) for p, c in zip(plain, chunks, strict=True))


@pytest.mark.parametrize("text", TEXTS[:3])
@pytest.mark.parametrize("pace", [None, 0.5, 2.0])
@pytest.mark.parametrize("chunk_frames", [None, 0, 1, 7, 8, 9])
def test_taco_voice_words_follow_its_attention(taco_addon, text, pace, chunk_frames):
    pipeline = taco_addon.build()
    words, tokens = text_words(pipeline, text)
    chunks, per_chunk, sizes = spoken(pipeline, text, pace=pace, chunk_frames=chunk_frames)
    check_rules(per_chunk, sizes, [w[0] for w in words], sum(sizes), pipeline.frame_s)
    # the attention's own rows, stretched by the pace, read frame by frame
    decoder = pipeline.streamable_block
    env = {"tokens": tokens, **({"pace": np.float32(pace)} if pace else {})}
    alignment = np.concatenate([c["alignment"] for c in decoder.generate(env) if len(c["alignment"])])
    assert len(alignment) == sum(sizes)
    fs = pipeline.frame_s
    want = [(t, a * fs, b * fs) for t, a, b in reference(alignment.argmax(axis=1).tolist(), words)]
    assert [w for c in per_chunk for w in c] == want
    plain = [c["mel"] for c in pipeline.stream_outputs(text, pace=pace, chunk_frames=chunk_frames)]
    np.testing.assert_array_equal(np.concatenate(plain), np.concatenate([c["mel"] for c in chunks]))


@dataclass
class Piece:
    text: str


@pytest.mark.parametrize("text", TEXTS)
def test_lazy_whole_and_pieces_give_the_same_words(fast_addon, monkeypatch, text):
    pipeline = fast_addon.build()
    assert pipeline.reads_text_lazily
    lazy = [c["words"] for c in pipeline.stream_outputs(text, words=True)]
    pieces = [Piece(text[i:i + 7]) for i in range(0, len(text), 7)]
    in_pieces = [c["words"] for c in pipeline.stream_outputs(iter(pieces), words=True)]
    monkeypatch.setattr(StreamablePipeline, "lazy_text", False)
    whole = [c["words"] for c in pipeline.stream_outputs(text, words=True)]
    flat = [w for c in whole for w in c]
    assert flat and [w for c in lazy for w in c] == flat == [w for c in in_pieces for w in c]


def test_words_off_adds_nothing(fast_addon, taco_addon):
    for addon in (fast_addon, taco_addon):
        assert all(set(c) == {"mel"} for c in addon.build().stream_outputs("Hello there."))
