"""Choose which units live: drop the lowest-scored channels until the cost fits the budget."""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.channels import ChannelGroup


@dataclass(frozen=True)
class SelectionRules:
    """Constraints users of pruning tools expect: widths that stay fast, layers left alone."""

    round_to: int = 1  # "auto" is resolved to an int by resolve_round_to before it gets here
    min_channels: int = 1
    exclude: tuple[str, ...] = ()
    auto: bool = False  # round_to is the runtime's block (--round-to auto)

    def step(self, group: ChannelGroup) -> int:
        """Channels are removed in chunks of this many: round_to where the seed's width was a
        multiple of it (as the option promises), else 1. With auto, a group of one block
        is rounded finer: it could otherwise never shrink."""
        if self.auto and group.channels <= self.round_to:
            return 1
        if self.round_to > 1 and group.channels % self.round_to == 0:
            return self.round_to
        return 1


ROUND_TO_AUTO = "auto"


def resolve_round_to(value: int | str, runtime: str = "ort-cpu") -> int:
    """`--round-to auto`: the channel block of the runtime's fast kernels on this machine."""
    if value == ROUND_TO_AUTO:
        from onnxmorph.latency.runtime import channel_block

        return channel_block(runtime)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise PruningError(f"--round-to {value!r} is not valid: give 'auto' or a number at "
                           "least 1")
    return number


def check_budget(budget: float) -> None:
    if not 0 < budget <= 1:
        raise PruningError(f"budget {budget} is outside (0, 1]; give the fraction of the "
                           "seed's cost to keep, e.g. 0.5")


def prunable_groups(analysis: Analysis, rules: SelectionRules) -> list[ChannelGroup]:
    """Prunable groups minus those with an excluded layer; an unmatched pattern is an error."""
    groups = analysis.channels.prunable_groups()
    excluded: set[int] = set()
    all_layers = {layer for g in analysis.groups for layer in g.layers}
    for pattern in rules.exclude:
        matched = {layer for layer in all_layers if fnmatch.fnmatchcase(layer, pattern)}
        if not matched:
            raise PruningError(f"--exclude '{pattern}' matches no layer; "
                               "`onnxmorph analyze --all-groups` lists the layer names")
        excluded |= {g.id for g in groups if matched & set(g.layers)}
    chosen = [g for g in groups if g.id not in excluded]
    if not chosen:
        reasons = sorted({g.reason for g in analysis.groups if g.reason})
        why = reasons[0] if reasons else "every group was excluded"
        raise PruningError(f"the model has no prunable channel group (e.g. one {why}); "
                           "nothing can be removed")
    return chosen


def select_to_budget(
    analysis: Analysis, scores: np.ndarray, target: str, budget: float,
    rules: SelectionRules = SelectionRules(), alive: np.ndarray | None = None,
    cost: Callable[[np.ndarray], float] | None = None,
) -> np.ndarray:
    """Alive mask over units: remove lowest-scored chunks, globally, until cost ≤ budget.

    `alive` is a starting structure (say, the channels whose gates stayed open); without it
    every channel starts alive. `cost` (alive mask → cost, e.g. a LatencyExpr) replaces the
    analysis' cost for `target`; it must not rise when channels are removed.
    """
    check_budget(budget)
    expr = cost if cost is not None else analysis.cost.expr(target)
    seed_cost = expr()
    if seed_cost <= 0:
        raise PruningError(f"the model has no {target} cost to reduce; choose another --target")
    limit = budget * seed_cost
    alive = (np.ones(analysis.channels.num_units, dtype=bool) if alive is None
             else np.asarray(alive, dtype=bool).copy())
    heap: list[tuple[float, int, int]] = []
    orders: dict[int, list[int]] = {}
    floors: dict[int, int] = {}
    groups = {g.id: g for g in prunable_groups(analysis, rules)}
    for group in groups.values():
        ranked = group.units[np.argsort(scores[group.units], kind="stable")]
        orders[group.id] = [int(u) for u in ranked if alive[u]]
        step = _step(group, rules)
        floors[group.id] = -(-max(rules.min_channels, 0) // step) * step
        _push(heap, group, orders, floors, scores, step)
    # The removal order depends on scores only, and cost falls with every removal, so the
    # shortest prefix of that order that meets the budget is found by bisection.
    sequence: list[list[int]] = []
    while heap:
        _, group_id, _ = heapq.heappop(heap)
        group = groups[group_id]
        step = _step(group, rules)
        chunk, orders[group_id] = orders[group_id][:step], orders[group_id][step:]
        sequence.append(chunk)
        _push(heap, group, orders, floors, scores, step)
    removal = np.array([u for chunk in sequence for u in chunk], dtype=np.int64)
    ends = np.cumsum([len(chunk) for chunk in sequence]).astype(np.int64)

    def cost_after(count: int) -> float:
        trial = alive.copy()
        trial[removal[: ends[count - 1]] if count else removal[:0]] = False
        return expr(np.asarray(trial, dtype=np.float64))

    low, high = 0, len(sequence)
    if cost_after(high) <= limit:
        while low < high:
            middle = (low + high) // 2
            if cost_after(middle) <= limit:
                high = middle
            else:
                low = middle + 1
    cost = cost_after(high)
    alive[removal[: ends[high - 1]] if high else removal[:0]] = False
    if cost > limit * (1 + 1e-9):
        raise PruningError(
            f"budget {budget} cannot be met: the smallest reachable {target} cost is "
            f"{cost / seed_cost:.3f} of the seed's; raise --budget or lower --min-channels"
        )
    return alive


def _step(group: ChannelGroup, rules: SelectionRules) -> int:
    return rules.step(group)


def _push(heap, group, orders, floors, scores, step) -> None:
    remaining = orders[group.id]
    if len(remaining) - step >= floors[group.id]:
        chunk = remaining[:step]
        heapq.heappush(heap, (float(np.mean(scores[chunk])), group.id, len(remaining)))
