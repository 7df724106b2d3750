"""`expand`: multiply every prunable group's width by W — MorphNet's expand step.

W < 1 keeps the highest-L1 channels (the uniform-width baseline on a seed); W > 1 adds fresh
channels whose outgoing weights are zero, so the grown model starts out computing exactly
what its input computes and fine-tuning puts the new capacity to use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.cost import TARGETS
from onnxmorph.io import check_output_path, json_bytes, sidecar, write_file_set
from onnxmorph.methods.select import SelectionRules, resolve_round_to
from onnxmorph.methods.uniform import uniform_width
from onnxmorph.rewrite import slice_channels
from onnxmorph.rewrite.grow import grow_channels
from onnxmorph.rewrite.postconditions import check_seed_runs, check_sliced
from onnxmorph.rewrite.verify import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerances

_MAX_WIDTH = 8.0


@dataclass
class ExpandResult:
    model: onnx.ModelProto
    width: float
    report: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> dict[str, Path]:
        """Write the model and `<stem>.report.json`, all or nothing, the report last."""
        path = check_output_path(path)
        paths = {"model": path, "report": sidecar(path, "report.json")}
        check_output_path(paths["report"])
        write_file_set({path: self.model.SerializeToString(),
                        paths["report"]: json_bytes(self.report)})
        return paths


def expand(
    model: str | os.PathLike | onnx.ModelProto, *, width: float | None = None,
    budget: float | None = None, target: str = "flops", round_to: int | str = "auto",
    min_channels: int = 1, input_shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0, verify: bool = True, atol: float | None = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL, allow_uncounted: bool = False,
) -> ExpandResult:
    """Scale every prunable group by `width`, or by the largest width whose `target` cost is
    at most `budget` × the model's own cost (budget may exceed 1 to grow).

    verify (on by default): the post-conditions of a sliced model. A grown model's new
    channels have zero outgoing weights, so it too must compute exactly what MODEL computes.
    """
    if (width is None) == (budget is None):
        raise PruningError("give exactly one of --width and --budget")
    if target not in TARGETS:
        raise PruningError(f"unknown target '{target}'; use one of {', '.join(TARGETS)}")
    if width is not None and not 0 < width <= _MAX_WIDTH:
        raise PruningError(f"width {width} is outside (0, {_MAX_WIDTH}]")
    if budget is not None and not 0 < budget < math.inf:
        raise PruningError(f"budget {budget} must be a positive number")
    check_tolerances(atol, rtol)
    analysis = analyze(model, input_shapes, allow_uncounted=allow_uncounted)
    if verify:
        check_seed_runs(analysis)
    rules = SelectionRules(round_to=resolve_round_to(round_to), min_channels=min_channels,
                           auto=round_to == "auto")
    expr = analysis.cost.expr(target)
    if budget is not None:
        width = _width_for_budget(analysis, budget * expr(), target, rules, seed)
    scaled = _scaled(analysis, width, rules, seed)
    after = analyze(scaled.model, analysis.loaded.input_shapes,
                    allow_uncounted=allow_uncounted)
    report = {
        "width": width, "target": target,
        "seed": {"macs": int(round(analysis.macs)), "params": int(round(analysis.params))},
        "expanded": {"macs": int(round(after.macs)), "params": int(round(after.params))},
        "channels": {str(g.id): [g.channels, scaled.counts.get(g.id, g.channels)]
                     for g in analysis.channels.prunable_groups()},
        "not_grown": {str(g): why for g, why in scaled.skipped.items()},
    }
    if verify:
        report["verify"] = check_sliced(analysis, scaled.model, atol=atol, rtol=rtol)
    return ExpandResult(model=scaled.model, width=width, report=report)


@dataclass
class _Scaled:
    model: onnx.ModelProto
    counts: dict[int, int]
    skipped: dict[int, str]


def _scaled(analysis: Analysis, width: float, rules: SelectionRules, seed: int) -> _Scaled:
    groups = analysis.channels.prunable_groups()
    if width <= 1:
        alive = uniform_width(analysis, width, rules)
        counts = {g.id: int(alive[g.units].sum()) for g in groups}
        return _Scaled(slice_channels(analysis, alive).model, counts, {})
    additions = {g.id: _target_count(g.channels, width, rules) - g.channels for g in groups}
    grown = grow_channels(analysis, additions, seed=seed)
    counts = {g.id: g.channels + grown.added.get(g.id, 0) for g in groups}
    return _Scaled(grown.model, counts, grown.skipped)


def _target_count(channels: int, width: float, rules: SelectionRules) -> int:
    step = rules.round_to if rules.round_to > 1 and channels % rules.round_to == 0 else 1
    return max(int(round(channels * width / step)) * step, step, rules.min_channels, 1)


def _width_for_budget(analysis: Analysis, limit: float, target: str, rules: SelectionRules,
                      seed: int) -> float:
    def cost(width: float) -> float:
        if width <= 1:
            return analysis.cost.expr(target)(uniform_width(analysis, width, rules))
        grown = _scaled(analysis, width, rules, seed).model
        # The seed's analysis passed: its uncounted nodes were allowed, so are the copies'.
        return analyze(grown, analysis.loaded.input_shapes,
                       allow_uncounted=bool(analysis.uncounted)).cost.expr(target)()

    low, high = 0.0, _MAX_WIDTH
    if cost(high) <= limit:
        return high
    for _ in range(20):  # cost grows with width: bisect
        middle = (low + high) / 2
        if cost(middle) <= limit:
            low = middle
        else:
            high = middle
    if low == 0.0:
        raise PruningError("no width fits the budget; raise --budget")
    return math.floor(low * 1e4) / 1e4  # rounding up could cross a rounding step


__all__ = ["ExpandResult", "expand"]
