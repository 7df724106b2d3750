"""The Pareto front on hand-made (accuracy, cost) points: maximise accuracy, minimise cost."""

import math

import numpy as np

from onnxmorph.pareto import dominates, pareto_front


def test_front_of_a_small_sweep():
    points = [(0.90, 10.0), (0.80, 5.0), (0.85, 12.0), (0.70, 4.0), (0.75, 6.0)]
    # 0.85@12 is beaten by 0.90@10, 0.75@6 by 0.80@5; the cheapest point is on the front.
    assert pareto_front(points) == [True, True, False, True, False]


def test_equal_points_are_all_on_the_front():
    points = [(0.8, 5.0), (0.8, 5.0), (0.7, 6.0)]
    assert pareto_front(points) == [True, True, False]
    assert not dominates(points[0], points[1]) and not dominates(points[1], points[0])


def test_equal_costs_keep_only_the_most_accurate():
    assert pareto_front([(0.80, 5.0), (0.90, 5.0), (0.90, 5.0)]) == [False, True, True]


def test_equal_accuracy_keeps_only_the_cheapest():
    assert pareto_front([(0.9, 6.0), (0.9, 5.0), (0.9, 7.0)]) == [False, True, False]


def test_unknown_points_are_off_the_front_and_hide_nothing():
    points = [(None, 1.0), (0.99, None), (0.5, math.nan), (math.nan, 0.1), (0.3, 10.0)]
    assert pareto_front(points) == [False, False, False, False, True]
    assert pareto_front([]) == []


def test_front_properties_on_random_points():
    rng = np.random.default_rng(0)
    # Coarse values so that ties and equal costs occur.
    points = [(float(a), float(c)) for a, c in zip(rng.integers(0, 6, 60) / 5,
                                                   rng.integers(1, 8, 60))]
    front = pareto_front(points)
    on = [p for p, f in zip(points, front) if f]
    off = [p for p, f in zip(points, front) if not f]
    assert on and off
    assert not any(dominates(a, b) for a in on for b in on)
    assert all(any(dominates(a, b) for a in on) for b in off)
    # The most accurate of the cheapest points is always on the front.
    cheapest = min(c for _, c in points)
    assert (max(a for a, c in points if c == cheapest), cheapest) in on
