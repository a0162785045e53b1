"""Run a batch of Triton requests through one network call per group of equal shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Feed = dict[str, np.ndarray]


def run_grouped(run: Callable[[Feed], Feed], feeds: Sequence[Feed]) -> list[Feed | Exception]:
    """Concatenate the feeds whose input shapes agree (except the batch axis), call ``run`` once per
    group, and split the outputs back per request, in order.  A group that fails gives each of its
    requests the exception, so one bad request never fails the others' groups."""
    groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[int]] = {}
    for i, feed in enumerate(feeds):
        key = tuple(sorted((n, v.shape[1:]) for n, v in feed.items()))
        groups.setdefault(key, []).append(i)
    results: list[Feed | Exception] = [Exception("not run")] * len(feeds)
    for members in groups.values():
        sizes = [len(next(iter(feeds[i].values()))) for i in members]
        try:
            if len(members) == 1:
                out = run(feeds[members[0]])
            else:
                out = run({n: np.concatenate([feeds[i][n] for i in members]) for n in feeds[members[0]]})
            bounds = np.cumsum([0, *sizes])
            for k, i in enumerate(members):
                results[i] = {n: v[bounds[k]:bounds[k + 1]] for n, v in out.items()}
        except Exception as e:  # noqa: BLE001 - reported per request by the caller
            for i in members:
                results[i] = e
    return results
