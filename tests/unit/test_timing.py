"""melstream.timing: what a listener hears, from chunk arrival times."""

from __future__ import annotations

import math

import numpy as np
import pytest

from melstream.timing import StreamTiming, stream_timing, summary

FRAME_S = 0.01  # 10 ms of speech per frame keeps the arithmetic readable


def test_a_stream_that_keeps_up_never_stalls() -> None:
    # 10 frames (100 ms of speech) per chunk, a chunk every 50 ms: the buffer only grows
    t = stream_timing([0.02, 0.07, 0.12, 0.17], [10, 10, 10, 10], total_s=0.18, frame_s=FRAME_S)
    assert t.first_chunk_s == 0.02
    assert t.gaps_s == pytest.approx((0.05, 0.05, 0.05))
    assert (t.chunks, t.frames, t.stalls, t.stall_s) == (4, 40, 0, 0.0)
    assert t.audio_s == pytest.approx(0.4)
    assert t.rtf == pytest.approx(0.18 / 0.4)


def test_a_chunk_arriving_exactly_when_playback_runs_out_is_not_a_stall() -> None:
    t = stream_timing([0.0, 0.1], [10, 10], total_s=0.1, frame_s=FRAME_S)
    assert t.stalls == 0


def test_a_late_chunk_is_one_stall_and_playback_resumes_from_it() -> None:
    # chunk 0 plays 0.0-0.1; chunk 1 comes at 0.3 (0.2 s of silence) and plays 0.3-0.4;
    # chunk 2 at 0.35 is in time because playback restarted at 0.3, not a cascade of stalls
    t = stream_timing([0.0, 0.3, 0.35], [10, 10, 10], total_s=0.35, frame_s=FRAME_S)
    assert t.stalls == 1
    assert t.stall_s == pytest.approx(0.2)


def test_every_late_chunk_counts() -> None:
    # one frame per chunk, a chunk every 20 ms: each is 10 ms late
    arrivals = [0.02 * i for i in range(6)]
    t = stream_timing(arrivals, [1] * 6, total_s=0.1, frame_s=FRAME_S)
    assert t.stalls == 5
    assert t.stall_s == pytest.approx(0.05)


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_chunk_streams(n: int) -> None:
    t = stream_timing([0.05] * n, [7] * n, total_s=0.06, frame_s=FRAME_S)
    assert t.chunks == n
    assert t.gaps_s == ()
    assert t.stalls == 0
    if n == 0:
        assert t.first_chunk_s == 0.06 and t.frames == 0 and math.isinf(t.rtf)
    else:
        assert t.first_chunk_s == 0.05 and t.frames == 7


@pytest.mark.parametrize(("arrivals", "frames", "frame_s", "message"), [
    ([0.1, 0.2], [1], FRAME_S, "2 arrival times but 1 frame counts"),
    ([0.2, 0.1], [1, 1], FRAME_S, "must not decrease"),
    ([0.1], [1], 0.0, "frame_s must be > 0"),
])
def test_bad_input_is_refused(arrivals: list[float], frames: list[int], frame_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stream_timing(arrivals, frames, total_s=1.0, frame_s=frame_s)


def test_summary_matches_numpy_and_handles_no_values() -> None:
    values = list(np.random.default_rng(0).exponential(size=1000))
    s = summary(values)
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["p50"] < s["p90"] < s["p95"] < s["p99"]
    assert s["p99"] == pytest.approx(np.percentile(values, 99))
    assert all(math.isnan(v) for v in summary([]).values())


def test_timing_is_a_value() -> None:
    t = stream_timing([0.0], [1], total_s=0.0, frame_s=FRAME_S)
    assert isinstance(t, StreamTiming)
    with pytest.raises(AttributeError):
        t.stalls = 3  # type: ignore[misc]
