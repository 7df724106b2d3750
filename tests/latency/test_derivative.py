"""LatencyExpr.derivative (the per-unit weight of gdp's proximal step and of gamma /
group-lasso's term for --target latency) against differences of the latency itself."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.latency.expr import latency_expr
from tests.latency.fixtures import synthetic_table


@pytest.mark.parametrize("ops", [False, True], ids=["weight layers", "all ops"])
def test_derivative_is_the_slope_from_below_of_the_predicted_latency(tiny_analysis, ops):
    expr = latency_expr(tiny_analysis, synthetic_table(tiny_analysis, ops=ops))
    rng = np.random.default_rng(0)
    num_units = expr.num_units
    for alive in (np.ones(num_units), (rng.random(num_units) > 0.4).astype(float),
                  rng.uniform(0.2, 0.9, num_units)):
        derivative = expr.derivative(alive)
        assert derivative.shape == (num_units,) and (derivative >= 0).all()
        for unit in range(num_units):
            lower = alive.copy()
            lower[unit] -= 1e-4  # the slope from below, also on a knot of the table
            expected = (expr(alive) - expr(lower)) / 1e-4
            assert abs(derivative[unit] - expected) <= 1e-4 * max(1.0, abs(expected))


def test_cost_expr_derivative_is_the_bilinear_slope(tiny_analysis):
    expr = tiny_analysis.cost.macs
    alive = np.random.default_rng(1).uniform(0.3, 1.0, expr.num_units)
    derivative = expr.derivative(alive)
    for unit in range(expr.num_units):
        up, down = alive.copy(), alive.copy()
        up[unit] += 1e-3
        down[unit] -= 1e-3
        assert np.isclose(derivative[unit], (expr(up) - expr(down)) / 2e-3, rtol=1e-6)


def test_a_dipping_table_never_rewards_a_channel(tiny_analysis):
    table = synthetic_table(tiny_analysis)
    for grid in table.configs.values():  # latency falls as channels grow: slopes < 0
        grid.ms = [[1.0 - v for v in row] for row in grid.ms]
    expr = latency_expr(tiny_analysis, table)
    assert (expr.derivative(np.ones(expr.num_units)) == 0).all()
