"""The accuracy–cost Pareto front of a set of runs: maximise accuracy, minimise cost.

Pure functions on numbers; no files, no models. A point with an unknown accuracy or cost
(None or NaN: a failed run, a cost that was not counted) is never on the front and never
hides another point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def is_known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, cost) `a` is at least as accurate and at most as costly as `b`, and
    strictly better in one of the two."""
    (acc_a, cost_a), (acc_b, cost_b) = a, b
    return acc_a >= acc_b and cost_a <= cost_b and (acc_a > acc_b or cost_a < cost_b)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For each (accuracy, cost) point, whether no other known point dominates it.

    Equal points are all on the front (none dominates the other); among points of equal
    cost only the most accurate ones are.
    """
    known = [i for i, (acc, cost) in enumerate(points) if is_known(acc) and is_known(cost)]
    front = [False] * len(points)
    for i in known:
        front[i] = not any(dominates(points[j], points[i]) for j in known if j != i)
    return front
