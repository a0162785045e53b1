"""How many streams a voice can serve in real time on the host it runs on, measured while it serves.

A listener in real time asks one second of audio per second.  A voice whose work takes ``c`` seconds of a
lane per second of audio (its *cost*) on a lane that runs ``p`` things at once can keep ``p / c`` listeners
fed, and no more, whatever number a profile wrote down for a faster host.  :class:`Capacity` measures the
cost of each lane of a voice, keeps it up to date, and says how many streams to admit:
``floor(headroom * p / c)`` for the costliest lane, at least :data:`MIN_STREAMS`, at most the profile's
``max_streams`` (an upper bound: memory, rows of a step, what was tested).

Lanes are where a voice's work runs one after another (melstream.serving.voice_model reports them):

* ``streams``: the streams' own threads while they compute a chunk and hand it to Triton, less the time they
  wait (for a compute turn, or for the chunk a lockstep engine makes: melstream.runners.schedule.waited_s);
  ``p`` is the voice's compute slots (at most the cores), or the cores when it has none;
* ``engine``: a lockstep engine's steps (melstream.runners.lockstep: one thread steps every stream), ``p = 1``.

The cost is wall time, not CPU time, on purpose: a voice's Python shares one interpreter lock and its cores
with the other voices and the clients on the host, and what a listener hears is wall time.  When the voice is
crowded its work takes longer, its cost rises, and it admits fewer; when it has room the cost falls back.
Each estimate is an exponential average over periods of at least :data:`PERIOD_S` that made at least
:data:`MIN_AUDIO_S` of audio; until the first one, the cost measured at load (:meth:`Capacity.calibrate`: one
utterance alone) stands.  ``headroom`` leaves the share of each lane that scheduling, delivery and the
measuring error need, so that an admitted stream never waits: :data:`HEADROOM`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: the share of a lane's measured capacity that admission hands out (the rest absorbs bursts, delivery and error)
HEADROOM = 0.5
#: a voice admits at least this many streams, whatever it measured (fewer would serve no one at all on a busy host)
MIN_STREAMS = 1
#: an estimate covers at least this long ...
PERIOD_S = 1.0
#: ... and at least this much audio made (a few chunks would be noise)
MIN_AUDIO_S = 2.0
#: weight of the newest period in the running estimate
SMOOTHING = 0.5

STREAMS_LANE = "streams"
ENGINE_LANE = "engine"


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity: Linux, where Triton runs)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Estimate:
    """What admission knows now: ``streams`` admitted at once; ``costs``: seconds of each lane per second of audio
    (absent: not measured); ``measured``: whether any period under load has replaced the calibration."""

    streams: int
    costs: Mapping[str, float]
    measured: bool


class Capacity:
    """The streams a voice admits, from its measured cost per second of audio (module docstring).

    ``lanes``: lane name -> how many of its things run at once.  ``max_streams``: the upper bound.  Thread-safe:
    every stream's thread and the engines report into it; :meth:`streams` is read at each admission."""

    def __init__(self, lanes: Mapping[str, float], *, max_streams: int, headroom: float = HEADROOM,
                 min_streams: int = MIN_STREAMS, period_s: float = PERIOD_S, min_audio_s: float = MIN_AUDIO_S,
                 smoothing: float = SMOOTHING, clock: Callable[[], float] = time.monotonic) -> None:
        if not lanes or any(p <= 0 for p in lanes.values()):
            raise ValueError(f"a capacity needs lanes that each run at least something at once, got {dict(lanes)}")
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        if max_streams < 1 or not 1 <= min_streams <= max_streams:
            raise ValueError(f"need 1 <= min_streams <= max_streams, got {min_streams} and {max_streams}")
        self.lanes = dict(lanes)
        self.max_streams = max_streams
        self.min_streams = min_streams
        self.headroom = headroom
        self.period_s, self.min_audio_s, self.smoothing = period_s, min_audio_s, smoothing
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: dict[str, float] = {}  # this period's seconds per lane, and its audio and start
        self._audio = 0.0
        self._since = 0.0
        self._start_period()
        self._costs: dict[str, float] = {}
        self._measured = False
        self._streams = max_streams  # nothing known yet: the profile's number

    def busy(self, lane: str, seconds: float) -> None:
        """``seconds`` of work on ``lane`` (a name given at construction)."""
        with self._lock:
            self._busy[lane] += seconds

    def produced(self, audio_s: float) -> bool:
        """``audio_s`` seconds of audio went out; True when that ended a period (the estimate is new)."""
        with self._lock:
            self._audio += audio_s
            if self._audio >= self.min_audio_s and self._clock() - self._since >= self.period_s:
                self._update()
                return True
            return False

    def take(self) -> dict[str, float]:
        """The seconds reported per lane since the last estimate (or the last take), forgotten here: a calibration
        run's own."""
        with self._lock:
            busy = self._busy
            self._start_period()
            return busy

    def calibrate(self, busy: Mapping[str, float], audio_s: float) -> None:
        """``busy`` (seconds per lane) made ``audio_s`` of audio in one utterance alone, measured at load: its costs
        are the estimate until the first period under load replaces them."""
        with self._lock:
            if audio_s > 0:
                self._costs = {lane: busy.get(lane, 0.0) / audio_s for lane in self.lanes}
                self._streams = self._bound()
            self._start_period()

    def streams(self) -> int:
        """Streams to admit at once now."""
        with self._lock:
            return self._streams

    def estimate(self) -> Estimate:
        with self._lock:
            return Estimate(self._streams, dict(self._costs), self._measured)

    def _update(self) -> None:
        """Fold this period into the costs and start the next (with the lock held)."""
        for lane, busy in self._busy.items():
            cost = busy / self._audio
            old = self._costs.get(lane)
            self._costs[lane] = cost if old is None or not self._measured else old + self.smoothing * (cost - old)
        self._measured = True
        self._start_period()
        self._streams = self._bound()

    def _start_period(self) -> None:
        self._busy = dict.fromkeys(self.lanes, 0.0)
        self._audio = 0.0
        self._since = self._clock()

    def _bound(self) -> int:
        n = float(self.max_streams)
        for lane, cost in self._costs.items():
            if cost > 0:
                n = min(n, math.floor(self.headroom * self.lanes[lane] / cost))
        return int(max(self.min_streams, min(self.max_streams, n)))
