"""Uniform width: every prunable group keeps the same fraction of its channels.

With width W < 1 on a trained seed this is the width-multiplier baseline that MorphNet's
learned structures are compared against; the channels kept are the highest-L1 ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.channels import ChannelGroup
from onnxmorph.methods.l1 import l1_unit_scores
from onnxmorph.methods.select import SelectionRules, check_budget, prunable_groups


def uniform_width(analysis: Analysis, width: float,
                  rules: SelectionRules | None = None) -> np.ndarray:
    """Alive mask keeping round(width × channels) of every prunable group (width ≤ 1)."""
    rules = rules or SelectionRules()
    if not 0 < width <= 1:
        raise PruningError(f"width {width} is outside (0, 1]; growing layers (width > 1) "
                           "is not supported yet")
    scores = l1_unit_scores(analysis)
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    for group in prunable_groups(analysis, rules):
        keep = _rounded(group.channels * width, group, rules)
        order = group.units[np.argsort(-scores[group.units], kind="stable")]
        alive[order[keep:]] = False
    return alive


def _rounded(target: float, group: ChannelGroup, rules: SelectionRules) -> int:
    step = rules.step(group)
    keep = int(round(target / step)) * step
    return int(min(group.channels, max(keep, rules.min_channels, step, 1)))


def width_for_budget(analysis: Analysis, target: str, budget: float,
                     rules: SelectionRules | None = None,
                     cost: Callable[[np.ndarray], float] | None = None,
                     ) -> tuple[float, np.ndarray]:
    """The largest width whose uniform structure costs at most budget × the seed's (`cost`,
    say a LatencyExpr, replaces the analysis' cost for `target`)."""
    rules = rules or SelectionRules()
    check_budget(budget)
    expr = cost if cost is not None else analysis.cost.expr(target)
    limit = budget * expr()
    low, high = 0.0, 1.0
    if expr(uniform_width(analysis, 1.0, rules)) <= limit:
        return 1.0, uniform_width(analysis, 1.0, rules)
    for _ in range(30):  # cost is monotone in width: bisect
        middle = (low + high) / 2
        if middle > 0 and expr(uniform_width(analysis, middle, rules)) <= limit:
            low = middle
        else:
            high = middle
    if low == 0.0:
        raise PruningError(f"budget {budget} cannot be met by a uniform width; the smallest "
                           f"width costs {expr(uniform_width(analysis, 1e-9, rules)) / expr():.3f}"
                           " of the seed")
    return low, uniform_width(analysis, low, rules)
