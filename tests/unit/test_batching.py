from __future__ import annotations

import numpy as np

from melstream.serving.batching import run_grouped


def test_groups_equal_shapes_and_splits_in_order() -> None:
    calls: list[tuple[int, ...]] = []

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feed["x"].shape)
        return {"y": feed["x"] * 2}

    feeds = [{"x": np.full((1, 3), i, np.float32)} for i in range(3)] + [{"x": np.full((2, 5), 9, np.float32)}]
    out = run_grouped(run, feeds)
    assert sorted(calls) == [(2, 5), (3, 3)]
    for i in range(3):
        np.testing.assert_array_equal(out[i]["y"], np.full((1, 3), 2 * i))  # type: ignore[index]
    np.testing.assert_array_equal(out[3]["y"], np.full((2, 5), 18))  # type: ignore[index]


def test_a_failing_group_does_not_fail_the_others() -> None:
    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feed["x"].shape[1] == 4:
            raise ValueError("bad width")
        return {"y": feed["x"]}

    out = run_grouped(run, [{"x": np.zeros((1, 4))}, {"x": np.zeros((1, 2))}])
    assert isinstance(out[0], ValueError) and "bad width" in str(out[0])
    assert not isinstance(out[1], Exception)
