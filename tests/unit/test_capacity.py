"""Admission from what the host can do (melstream.serving.capacity): the estimate from reported work, and a voice
that measures itself slower admitting fewer streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from melstream.runners.schedule import Scheduler, waited_s, waiting
from melstream.serving.capacity import ENGINE_LANE, STREAMS_LANE, Capacity, host_cores
from melstream.serving.voice_model import VoiceModel
from tests.unit.test_voice_model import WAIT_S, FakePb, request, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def capacity(**options: Any) -> tuple[Capacity, Clock]:
    clock = Clock()
    lanes = options.pop("lanes", {STREAMS_LANE: 2, ENGINE_LANE: 1})
    return Capacity(lanes, clock=clock, **{"max_streams": 64, "headroom": 0.5, **options}), clock


def period(cap: Capacity, clock: Clock, busy: dict[str, float], audio_s: float, seconds: float = 1.0) -> None:
    """One period of ``seconds`` in which the lanes were busy ``busy`` and ``audio_s`` of audio went out."""
    for lane, b in busy.items():
        cap.busy(lane, b)
    clock.now += seconds
    cap.produced(audio_s)


def test_nothing_measured_admits_the_upper_bound() -> None:
    cap, _ = capacity(max_streams=17)
    assert cap.streams() == 17 and not cap.estimate().measured


@pytest.mark.parametrize("cost, parallel, expected", [(0.01, 1, 50), (0.01, 2, 64), (0.1, 2, 10), (0.3, 1, 1), (0.5, 1, 1),
                                                      (2.0, 1, 1)])
def test_streams_are_the_headroom_share_of_parallel_over_cost(cost: float, parallel: int, expected: int) -> None:
    """floor(headroom * parallel / cost), at least 1 and at most max_streams (64)."""
    cap, clock = capacity(lanes={STREAMS_LANE: parallel})
    period(cap, clock, {STREAMS_LANE: cost * 10}, audio_s=10.0)
    assert cap.streams() == expected
    assert cap.estimate().costs[STREAMS_LANE] == pytest.approx(cost) and cap.estimate().measured


def test_the_costliest_lane_bounds_admission() -> None:
    cap, clock = capacity()
    # streams lane: 2 at once, 0.02 s per s -> 50; engine: 1 at once, 0.04 s per s -> 12
    period(cap, clock, {STREAMS_LANE: 0.2, ENGINE_LANE: 0.4}, audio_s=10.0)
    assert cap.streams() == 12


def test_a_period_ends_only_after_enough_time_and_enough_audio() -> None:
    cap, clock = capacity(period_s=1.0, min_audio_s=2.0)
    cap.busy(STREAMS_LANE, 1.0)
    clock.now += 5.0
    assert not cap.produced(1.9)  # long enough, too little audio
    assert not cap.estimate().measured
    assert cap.produced(0.1)  # 2.0 s of audio: the period ends (cost 0.5 -> floor(0.5 * 2 / 0.5) = 2)
    assert cap.estimate().measured and cap.streams() == 2
    cap.busy(STREAMS_LANE, 100.0)
    cap.produced(10.0)  # plenty of audio, but no time has passed: still the same period
    assert cap.streams() == 2


def test_the_estimate_follows_the_host_as_it_slows_and_recovers() -> None:
    """An exponential average: a host that gets four times slower lowers admission within a few periods, and
    recovers when it is fast again."""
    cap, clock = capacity(lanes={STREAMS_LANE: 1}, smoothing=0.5)
    period(cap, clock, {STREAMS_LANE: 0.1}, audio_s=10.0)  # 0.01 s/s: 50
    assert cap.streams() == 50
    seen = []
    for _ in range(6):
        period(cap, clock, {STREAMS_LANE: 0.4}, audio_s=10.0)  # 0.04 s/s: 12 once it is all that is seen
        seen.append(cap.streams())
    assert seen == sorted(seen, reverse=True) and seen[0] < 50 and seen[-1] in (12, 13)
    for _ in range(8):
        period(cap, clock, {STREAMS_LANE: 0.1}, audio_s=10.0)
    assert cap.streams() in (49, 50)


def test_calibration_stands_until_the_first_period_replaces_it() -> None:
    cap, clock = capacity(lanes={STREAMS_LANE: 1, ENGINE_LANE: 1})
    cap.busy(STREAMS_LANE, 123.0)  # before the calibration run: taken away, not the run's
    assert cap.take() == {STREAMS_LANE: 123.0, ENGINE_LANE: 0.0} and cap.take() == {STREAMS_LANE: 0.0, ENGINE_LANE: 0.0}
    cap.busy(STREAMS_LANE, 0.05)
    cap.busy(ENGINE_LANE, 0.1)
    cap.calibrate(cap.take(), 2.0)  # engine 0.05 s/s -> 10
    assert cap.streams() == 10 and not cap.estimate().measured
    period(cap, clock, {STREAMS_LANE: 0.1, ENGINE_LANE: 0.1}, audio_s=10.0)  # engine 0.01 -> 50 (no average with calibration)
    assert cap.streams() == 50


def test_calibration_without_audio_changes_nothing() -> None:
    cap, _ = capacity(max_streams=9)
    cap.calibrate({STREAMS_LANE: 5.0}, 0.0)
    assert cap.streams() == 9 and cap.estimate().costs == {}


def test_a_voice_calibrates_on_each_lane_least_of_its_runs() -> None:
    """Models loading beside a voice take the cores now and then: of its calibration runs, each lane's least
    counts (here the first run is 0.2 s slower: it is not what the voice admits from)."""
    from melstream.serving.voice_model import CALIBRATION_RUNS

    pb = FakePb()
    model = VoiceModel(pb)
    runs = iter([0.2] + [0.0] * (CALIBRATION_RUNS - 1))

    class Pipeline:
        def stream_outputs(self, text: Any, **options: Any) -> Iterator[dict[str, np.ndarray]]:
            time.sleep(next(runs) + 0.005)
            yield {"mel": np.zeros((100, 4), np.float32)}  # 1 s of audio at frame_s 0.01

    model.serve("timed", Pipeline(), max_streams=64, frame_s=0.01, compute_slots=1, headroom=0.5)
    model.calibrate("calibration")
    assert model.capacity is not None
    cost = model.capacity.estimate().costs[STREAMS_LANE]
    assert 0.005 <= cost < 0.1  # not 0.205
    assert model.admitted_streams >= 5  # 0.5 / 0.1; the slow run's 0.205 s/s would have admitted 2
    model.finalize()


@pytest.mark.parametrize("options", [{"lanes": {}}, {"lanes": {STREAMS_LANE: 0}}, {"headroom": 0.0}, {"headroom": 1.5},
                                     {"max_streams": 0}, {"min_streams": 0}, {"min_streams": 65}])
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        capacity(**options)


def test_host_cores_is_this_process_affinity() -> None:
    import os

    assert host_cores() == len(os.sched_getaffinity(0)) >= 1


# --- waits are not work -------------------------------------------------------------------------------------

def test_waited_s_counts_waits_for_a_turn_and_inside_waiting() -> None:
    scheduler = Scheduler(1)
    holder_in, holder_out = threading.Event(), threading.Event()

    def hold() -> None:
        with scheduler.turn(0.0):
            holder_in.set()
            assert holder_out.wait(WAIT_S)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_in.wait(WAIT_S)
    before = waited_s()
    threading.Timer(0.05, holder_out.set).start()
    with scheduler.turn(1.0):  # waits for the holder's turn to end
        turn_wait = waited_s() - before
        inside = waited_s()
        with waiting():
            time.sleep(0.03)
        body_wait = waited_s() - inside
    holder.join()
    assert turn_wait >= 0.04 and body_wait >= 0.025
    outside = waited_s()
    with waiting():  # no slot held: still a wait, not work
        time.sleep(0.01)
    assert waited_s() - outside >= 0.009


# --- a voice measures itself -------------------------------------------------------------------------------

class TimedPipeline:
    """``chunks`` chunks of ``frames`` frames, each taking ``work_s`` of this thread's time (a slowed-down voice)."""

    def __init__(self, chunks: int, frames: int, work_s: float) -> None:
        self.chunks, self.frames, self.work_s = chunks, frames, work_s
        self.gate = threading.Event()
        self.gate.set()

    def inputs_for(self, text: Any, **options: Any) -> dict[str, np.ndarray]:
        return {}

    def stream_outputs(self, text: Any, **options: Any) -> Iterator[dict[str, np.ndarray]]:
        for _ in range(self.chunks):
            with waiting():  # held here by the test: a wait, not work
                assert self.gate.wait(WAIT_S)
            time.sleep(self.work_s)
            yield {"mel": np.zeros((self.frames, 4), np.float32)}


def served(work_s: float, *, max_streams: int = 8, chunks: int = 12) -> tuple[VoiceModel, FakePb, TimedPipeline]:
    """A voice of 10-frame chunks (0.1 s of audio each) that takes ``work_s`` per chunk, calibrated and then
    measured over a few seconds of audio (one compute slot: one lane of one)."""
    pb = FakePb()
    model = VoiceModel(pb)
    pipeline = TimedPipeline(chunks=chunks, frames=10, work_s=work_s)
    model.serve("timed", pipeline, max_streams=max_streams, frame_s=0.01, compute_slots=1, headroom=0.5)
    model.calibrate("calibration")
    return model, pb, pipeline


def test_a_slowed_down_voice_admits_fewer_streams_and_refuses_the_rest_as_busy() -> None:
    """A voice that takes 0.06 s per 0.1 s of audio (cost >= 0.6) on one lane keeps at most 0.5 / 0.6 < 1 listener
    with headroom 0.5: it admits the minimum, 1, and says why it refuses; the same voice taking no time admits its
    upper bound, 8."""
    slow, slow_pb, pipeline = served(0.06)
    fast, fast_pb, _ = served(0.0)
    assert slow.admitted_streams == 1 and slow_pb.metric("melstream_admitted_streams").value == 1
    assert fast.admitted_streams == 8 and fast_pb.metric("melstream_admitted_streams").value == 8
    pipeline.gate.clear()  # the first stream holds its slot, waiting (not computing)
    first, second = request(), request()
    slow.execute([first])
    wait_until(lambda: slow.active_streams == 1)
    slow.execute([second])
    assert second.sender.kinds() == ["error+final"]
    code, message = second.sender.errors()[0]
    assert code == "UNAVAILABLE" and "all this host keeps in real time" in message
    pipeline.gate.set()
    assert first.sender.done.wait(WAIT_S) and first.sender.kinds()[-1] == "final"
    many = [request() for _ in range(8)]
    fast.execute(many)
    for r in many:
        assert r.sender.done.wait(WAIT_S) and "error+final" not in r.sender.kinds()
    slow.finalize()
    fast.finalize()


def test_waiting_is_not_counted_as_the_voice_work() -> None:
    """A stream that waits (for text, for an engine) inside its pull costs the voice nothing: held 40 ms at every
    0.1 s chunk (0.4 s per second of audio, were it work: 1 stream), a voice that computes nothing still admits its
    upper bound once it has measured a period of 3 s of audio."""
    model, pb, pipeline = served(0.0, chunks=30)
    pipeline.gate.clear()
    r = request()
    model.execute([r])
    while not r.sender.done.is_set():
        time.sleep(0.04)
        pipeline.gate.set()
        pipeline.gate.clear()
    assert model.capacity is not None and model.capacity.estimate().measured
    assert model.admitted_streams == 8 and pb.metric("melstream_admitted_streams").value == 8
    model.finalize()


def test_without_headroom_a_voice_admits_its_max_streams_whatever_it_costs() -> None:
    pb = FakePb()
    model = VoiceModel(pb)
    model.serve("timed", TimedPipeline(chunks=2, frames=10, work_s=0.05), max_streams=3, frame_s=0.01, compute_slots=1)
    model.calibrate("calibration")
    assert model.capacity is None and model.admitted_streams == 3
    model.finalize()
