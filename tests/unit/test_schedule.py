"""melstream.runners.schedule: at most ``slots`` streams compute at once, the most urgent first (issue 11,
listener-first scheduling; the voice model's deadlines are tested in test_voice_model.py)."""

from __future__ import annotations

import threading
import time

import pytest

from melstream.runners.schedule import Scheduler, waiting

WAIT_S = 10.0


def test_turns_beyond_the_slots_wait_and_go_earliest_deadline_first() -> None:
    scheduler = Scheduler(1)
    order: list[str] = []
    holder_in, holder_go = threading.Event(), threading.Event()

    def holder() -> None:
        with scheduler.turn(0.0):
            holder_in.set()
            holder_go.wait(WAIT_S)
        order.append("holder")

    def worker(name: str, deadline: float) -> None:
        with scheduler.turn(deadline):
            order.append(name)

    t0 = threading.Thread(target=holder)
    t0.start()
    assert holder_in.wait(WAIT_S)
    # three streams queue behind the holder, arriving latest-deadline first
    waiters = []
    for name, deadline in (("late", 30.0), ("soon", 10.0), ("middle", 20.0)):
        t = threading.Thread(target=worker, args=(name, deadline))
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + WAIT_S
        while scheduler.queued < len(waiters):  # each is queued before the next arrives (polled, bounded)
            assert time.monotonic() < deadline, "a turn was never queued"
            time.sleep(0.001)
    holder_go.set()
    for t in [t0, *waiters]:
        t.join(WAIT_S)
    assert [o for o in order if o != "holder"] == ["soon", "middle", "late"]
    assert scheduler.granted_out_of_order >= 1  # "soon" came second and went first


def test_no_more_than_slots_turns_run_at_once() -> None:
    scheduler = Scheduler(2)
    running, peak = [0], [0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        with scheduler.turn(float(i)):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.005)  # work that takes a while, so turns overlap if allowed
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert peak[0] == 2 and scheduler.queued == 0


def test_waiting_gives_the_slot_up_for_the_wait() -> None:
    scheduler = Scheduler(1)
    inside, release = threading.Event(), threading.Event()
    other_ran = threading.Event()

    def blocked_stream() -> None:
        with scheduler.turn(0.0), waiting():  # e.g. a chunk from the lockstep engine
            inside.set()
            release.wait(WAIT_S)

    def other() -> None:
        with scheduler.turn(1.0):
            other_ran.set()

    a = threading.Thread(target=blocked_stream)
    a.start()
    assert inside.wait(WAIT_S)
    b = threading.Thread(target=other)
    b.start()
    assert other_ran.wait(WAIT_S), "the slot was not given up during the wait"
    release.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert not a.is_alive() and not b.is_alive()


def test_waiting_outside_a_turn_does_nothing() -> None:
    with waiting():
        pass


def test_a_scheduler_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1 slot"):
        Scheduler(0)
