"""What a listener of one stream experiences, from the arrival times of its chunks.

Shared by the load tests (``loadtests/``) and the streaming benchmark (``benchmarks/streams.py``)
so both speak the same terms:

- **first chunk**: seconds from sending the request to the first chunk's arrival;
- **gap**: seconds between two consecutive chunks;
- **RTF**: wall seconds per second of speech (< 1 keeps up); **RTFX** = 1 / RTF;
- **stall**: a chunk that arrives after the audio already received has finished playing.  The
  listener starts playing at the first chunk and hears silence until the late chunk arrives;
  playback then resumes from there, so one late chunk is one stall, not a cascade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class StreamTiming:
    """One stream, seen by its client.  Times in seconds from the request."""

    first_chunk_s: float
    gaps_s: tuple[float, ...]
    total_s: float
    chunks: int
    frames: int
    audio_s: float
    stalls: int
    stall_s: float

    @property
    def rtf(self) -> float:
        """Wall time per second of speech (``inf`` for an empty stream)."""
        return self.total_s / self.audio_s if self.audio_s > 0 else math.inf


def stream_timing(arrivals_s: Sequence[float], frames: Sequence[int], *, total_s: float, frame_s: float) -> StreamTiming:
    """Timing of one stream from its chunks' arrival times (seconds from the request, in order) and
    frame counts; ``total_s`` is when the final response came; ``frame_s`` the seconds of speech per
    frame (hop_length / sample_rate)."""
    if len(arrivals_s) != len(frames):
        raise ValueError(f"{len(arrivals_s)} arrival times but {len(frames)} frame counts")
    if frame_s <= 0:
        raise ValueError(f"frame_s must be > 0, got {frame_s}")
    if any(b < a for a, b in zip(arrivals_s, arrivals_s[1:], strict=False)):
        raise ValueError("arrival times must not decrease")
    if not arrivals_s:
        return StreamTiming(first_chunk_s=total_s, gaps_s=(), total_s=total_s, chunks=0, frames=0, audio_s=0.0,
                            stalls=0, stall_s=0.0)
    stalls, stall_s = 0, 0.0
    play_end = arrivals_s[0] + frames[0] * frame_s  # when the audio received so far runs out
    for arrival, n in zip(arrivals_s[1:], frames[1:], strict=True):
        if arrival > play_end:
            stalls += 1
            stall_s += arrival - play_end
            play_end = arrival
        play_end += n * frame_s
    n_frames = int(sum(frames))
    return StreamTiming(first_chunk_s=float(arrivals_s[0]), gaps_s=tuple(float(b - a) for a, b in zip(arrivals_s, arrivals_s[1:], strict=False)),
                        total_s=float(total_s), chunks=len(frames), frames=n_frames, audio_s=n_frames * frame_s,
                        stalls=stalls, stall_s=stall_s)


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean and the percentiles in :data:`PERCENTILES` (NaN for no values), keys ``mean``, ``p50``…"""
    if len(values) == 0:
        return {"mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), **{f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}}
