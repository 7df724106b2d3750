"""Piecewise-linear and bilinear interpolation as ReLU features (numpy side)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.latency.interpolate import BilinearTable, HatBasis, StackedTables


def test_hat_basis_interpolates_like_numpy_inside_and_extends_linearly_past_the_end():
    knots = np.array([0.0, 8.0, 16.0, 40.0, 64.0])
    values = np.array([0.5, 1.0, 3.0, 4.0, 9.0])
    basis = HatBasis.on(knots)
    x = np.linspace(0, 64, 97)
    assert np.allclose(basis(x) @ values, np.interp(x, knots, values))
    beyond = basis(np.array([80.0])) @ values  # last slope (9-4)/24 continued
    assert beyond[0] == pytest.approx(9.0 + 16 * 5 / 24)
    assert np.allclose(basis(knots), np.eye(knots.size))


def test_bilinear_table_is_exact_for_bilinear_functions_and_hits_grid_values():
    grid_x, grid_y = [8, 16, 32, 48], [16, 32, 64]

    def f(x, y):
        return 0.3 + 0.01 * x + 0.02 * y + 0.001 * x * y

    values = [[f(x, y) for y in grid_y] for x in grid_x]
    table = BilinearTable.from_grid(grid_x, grid_y, values)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(8, 48, 50), rng.uniform(16, 64, 50)
    assert np.allclose(table(x, y), f(x, y))
    # below the grid: extended linearly to the zero knot, never negative
    assert np.allclose(table(np.array([4.0]), np.array([16.0])), f(4.0, 16.0))
    uneven = [[x * y ** 1.5 for y in grid_y] for x in grid_x]
    curved = BilinearTable.from_grid(grid_x, grid_y, uneven)
    for i, gx in enumerate(grid_x):
        assert np.allclose(curved(np.full(3, gx), np.array(grid_y, float)), uneven[i])


def test_zero_knot_value_is_clamped_at_zero():
    table = BilinearTable.from_grid([8, 16], [24], [[1.0], [10.0]])  # slope would go negative
    assert table(np.array([0.0]), np.array([24.0]))[0] == 0.0
    assert table(np.array([12.0]), np.array([1.0]))[0] == pytest.approx(5.5)  # y constant


def test_stacked_tables_match_each_table():
    tables = [BilinearTable.from_grid([8, 16, 32], [8, 24], [[1, 2], [2, 4], [4, 9]]),
              BilinearTable.from_grid([3], [8, 16, 24, 32, 40], [[1, 3, 4, 4.5, 7]]),
              BilinearTable.from_grid([5], [7], [[0.25]])]
    stacked = StackedTables.of(tables)
    x, y = np.array([12.0, 3.0, 5.0]), np.array([16.0, 30.0, 7.0])
    expected = [t(xi, yi)[0] for t, xi, yi in zip(tables, x, y)]
    assert np.allclose(stacked(x, y), expected)
