"""Piecewise-linear (1-D) and bilinear (2-D) interpolation written as ReLU features.

On knots g_0 = 0 < g_1 < … < g_{n-1}, the hat functions h_i (1 at g_i, 0 at the other knots,
linear between, extended linearly past the last knot) are a fixed linear map of the features
R(x) = [1, relu(x - g_0), …, relu(x - g_{n-2})]: H(x) = R(x) · C with C = A⁻¹, A[j] = R(g_j).
A table V on a knot grid then reads f(x, y) = H_x(x) · V · H_y(y). The same formula runs in
numpy (selection) and as ONNX nodes in the training graph (Relu, MatMul: differentiable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAR = 1e12  # knot of padding: relu(x - FAR) is 0 for every channel count


@dataclass(frozen=True)
class HatBasis:
    knots: np.ndarray  # [n], starting at 0
    matrix: np.ndarray  # C, [n, n]

    @classmethod
    def on(cls, knots: np.ndarray) -> HatBasis:
        knots = np.asarray(knots, dtype=np.float64)
        if knots.size > 1 and np.any(np.diff(knots) <= 0):
            raise ValueError(f"knots must increase: {knots}")
        return cls(knots, np.linalg.inv(features(knots, knots)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """[len(x), n]: hat-function values at x."""
        return features(np.atleast_1d(x), self.knots) @ self.matrix


def features(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)[:, None]
    ramps = np.maximum(x - np.asarray(knots, dtype=np.float64)[None, :-1], 0.0)
    return np.concatenate([np.ones((x.shape[0], 1)), ramps], axis=1)


def with_zero_knot(grid: list[int] | np.ndarray, values: np.ndarray,
                   axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Prepend knot 0 along `axis`, its value extended linearly from the first two knots
    (proportionally with one knot), never below 0: gates can then price any width."""
    grid = np.asarray(grid, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if grid[0] <= 0:
        return grid, values
    first = np.take(values, [0], axis=axis)
    if grid.size > 1:
        second = np.take(values, [1], axis=axis)
        zero = first - (second - first) * grid[0] / (grid[1] - grid[0])
    else:
        zero = np.zeros_like(first)
    return np.concatenate([[0.0], grid]), np.concatenate([np.maximum(zero, 0.0), values],
                                                         axis=axis)


@dataclass(frozen=True)
class BilinearTable:
    """f(x, y) on a grid; an axis whose grid has one point is constant along that axis."""

    x: HatBasis
    y: HatBasis
    values: np.ndarray  # [len(x.knots), len(y.knots)]

    @classmethod
    def from_grid(cls, grid_x, grid_y, values) -> BilinearTable:
        values = np.asarray(values, dtype=np.float64).reshape(len(grid_x), len(grid_y))
        knots_x, knots_y = np.asarray(grid_x, float), np.asarray(grid_y, float)
        if knots_x.size > 1:
            knots_x, values = with_zero_knot(knots_x, values, axis=0)
        if knots_y.size > 1:
            knots_y, values = with_zero_knot(knots_y, values, axis=1)
        return cls(_basis(knots_x), _basis(knots_y), values)

    def __call__(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        hx, hy = self.x(np.atleast_1d(x)), self.y(np.atleast_1d(y))
        return np.einsum("li,ij,lj->l", hx, self.values, hy)


def _basis(knots: np.ndarray) -> HatBasis:
    if knots.size == 1:  # constant: one feature (the 1), one hat
        return HatBasis(knots, np.ones((1, 1)))
    return HatBasis.on(knots)


@dataclass(frozen=True)
class StackedTables:
    """Many BilinearTables padded to one size, for vectorised numpy and ONNX evaluation."""

    knots_x: np.ndarray  # [L, K-1] ramp knots (padding: FAR)
    knots_y: np.ndarray
    matrix_x: np.ndarray  # [L, K, K]
    matrix_y: np.ndarray
    values: np.ndarray  # [L, K, K]

    @classmethod
    def of(cls, tables: list[BilinearTable]) -> StackedTables:
        size = max(max(t.x.knots.size, t.y.knots.size) for t in tables) if tables else 1
        count = len(tables)
        knots = {a: np.full((count, max(size - 1, 0)), FAR) for a in "xy"}
        matrices = {a: np.zeros((count, size, size)) for a in "xy"}
        values = np.zeros((count, size, size))
        for i, table in enumerate(tables):
            for axis, basis in (("x", table.x), ("y", table.y)):
                n = basis.knots.size
                knots[axis][i, : n - 1] = basis.knots[:-1]
                matrices[axis][i, :n, :n] = basis.matrix
            values[i, : table.values.shape[0], : table.values.shape[1]] = table.values
        return cls(knots["x"], knots["y"], matrices["x"], matrices["y"], values)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """[L] values of every table at its own (x_l, y_l)."""
        hx = np.einsum("lk,lki->li", _stacked_features(x, self.knots_x), self.matrix_x)
        hy = np.einsum("lk,lki->li", _stacked_features(y, self.knots_y), self.matrix_y)
        return np.einsum("li,lij,lj->l", hx, self.values, hy)


    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([L] ∂f/∂x, [L] ∂f/∂y) of every table at its own (x_l, y_l). On a knot the slope
        from below: what removing a channel saves, as the Relu ramps' gradient (0 at 0)
        makes it in the training graph."""
        fx, fy = _stacked_features(x, self.knots_x), _stacked_features(y, self.knots_y)
        hx = np.einsum("lk,lki->li", fx, self.matrix_x)
        hy = np.einsum("lk,lki->li", fy, self.matrix_y)
        dx = np.einsum("lk,lki->li", _stacked_slopes(x, self.knots_x), self.matrix_x)
        dy = np.einsum("lk,lki->li", _stacked_slopes(y, self.knots_y), self.matrix_y)
        return (np.einsum("li,lij,lj->l", dx, self.values, hy),
                np.einsum("li,lij,lj->l", hx, self.values, dy))


def _stacked_slopes(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """d/dx of _stacked_features: 0 for the constant, 1 on each ramp past its knot."""
    ramps = (np.asarray(x, dtype=np.float64)[:, None] > knots).astype(np.float64)
    return np.concatenate([np.zeros((knots.shape[0], 1)), ramps], axis=1)


def _stacked_features(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    ramps = np.maximum(np.asarray(x, dtype=np.float64)[:, None] - knots, 0.0)
    return np.concatenate([np.ones((knots.shape[0], 1)), ramps], axis=1)
