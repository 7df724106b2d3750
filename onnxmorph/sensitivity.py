"""Which layers are fragile: accuracy after pruning one group at a time.

For every prunable group and every fraction, the group's lowest-ranked channels (by the
chosen criterion) are sliced away, the rest of the model is left as the seed, and the sliced
model is evaluated on the loader's evaluation batches: accuracy with labels, else top-1
agreement with the seed. This is what to read before choosing a budget or `--exclude`.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.registry import (
    DEFAULT_CALIBRATION_BATCHES,
    MethodInput,
    get_method,
    unit_scores,
)
from onnxmorph.methods.select import SelectionRules, prunable_groups

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)


@dataclass
class GroupSensitivity:
    id: int
    layers: list[str]
    channels: int
    removed: list[int]  # channels removed at each fraction
    values: list[float]  # the metric after removing them
    macs_ratio: list[float]  # the whole model's MACs left, as a fraction of the seed's


@dataclass
class SensitivityReport:
    model: str
    method: str
    metric: str  # "accuracy" or "agreement" (top-1 with the seed, without labels)
    fractions: list[float]
    baseline: float  # the seed's metric
    groups: list[GroupSensitivity] = field(default_factory=list)
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        from onnxmorph.cli.table import render_table

        header = ["group", "channels", "first layer",
                  *[f"{f:.0%} removed" for f in self.fractions]]
        rows = [[str(g.id), str(g.channels), _label(g),
                 *[f"{v:.4f} ({n})" for v, n in zip(g.values, g.removed)]]
                for g in self.groups]
        title = (f"{self.metric} of the seed {self.baseline:.4f}; {self.metric} after removing "
                 f"a fraction of one group's channels by {self.method} (channels removed):")
        return title + "\n" + render_table(header, rows)

    def write_plot(self, path: str | os.PathLike) -> bool:
        """A groups × fraction heat map of the metric as PNG; False without matplotlib."""
        try:
            import matplotlib  # noqa: F401
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return False
        from onnxmorph.io import write_atomic

        values = np.array([g.values for g in self.groups]).reshape(-1, len(self.fractions))
        height = min(max(2.5, 0.32 * len(self.groups) + 1.5), 20.0)
        figure = Figure(figsize=(2.0 + 1.1 * len(self.fractions), height), dpi=90,
                        layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        image = ax.imshow(values, cmap="RdYlGn", vmin=values.min(initial=self.baseline),
                          vmax=values.max(initial=self.baseline), aspect="auto")
        for (row, column), value in np.ndenumerate(values):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(self.fractions)), [f"{f:.0%}" for f in self.fractions])
        ax.set_yticks(range(len(self.groups)),
                      [f"{g.id}: {_label(g)} ({g.channels})" for g in self.groups], fontsize=7)
        ax.set_xlabel(f"channels of the group removed ({self.method})")
        ax.set_title(f"{self.metric} (seed {self.baseline:.3f})", fontsize=9)
        figure.colorbar(image, ax=ax, shrink=0.8)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        write_atomic(path, buffer.getvalue())
        return True


def sensitivity(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    data: str | os.PathLike,
    method: str = "l1",
    fractions: tuple[float, ...] | list[float] = DEFAULT_FRACTIONS,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    exclude: tuple[str, ...] | list[str] = (),
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES,
    eval_batches: int | None = None,
    allow_uncounted: bool = False,
    prune_embedding: bool = False,
) -> SensitivityReport:
    """Evaluate the seed with each prunable group thinned by each fraction, one at a time
    (`prune_embedding`: a transformer's embedding dimension is one of the groups)."""
    from onnxmorph.rewrite import slice_channels
    from onnxmorph.training.data import DataSource
    from onnxmorph.training.evaluate import evaluate

    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise PruningError(f"fractions {fractions} must each lie in (0, 1), e.g. 0.25,0.5,0.75")
    if eval_batches is not None and eval_batches < 1:
        raise PruningError("--eval-batches must be at least 1")
    start = time.perf_counter()
    chosen = get_method(method)
    analysis = analyze(model, input_shapes, allow_uncounted=allow_uncounted,
                       prune_embedding=prune_embedding)
    rules = SelectionRules(exclude=tuple(exclude))
    request = MethodInput(analysis=analysis, rules=rules, data=data,
                          calibration_batches=calibration_batches)
    ranked = unit_scores(chosen, request)
    seed = analysis.loaded.model
    source = DataSource.for_model(data, seed, analysis.loaded.shapes)
    base = evaluate(seed, source, reference=seed, max_batches=eval_batches)
    metric = "accuracy" if base.accuracy is not None else "agreement"
    expr, seed_macs = analysis.cost.expr("flops"), analysis.macs
    report = SensitivityReport(model=str(analysis.loaded.source), method=method, metric=metric,
                               fractions=fractions, baseline=_metric(base, metric),
                               notes=ranked.notes)
    for group in prunable_groups(analysis, rules):
        order = group.units[np.argsort(ranked.values[group.units], kind="stable")]
        row = GroupSensitivity(id=group.id, layers=list(group.layers), channels=group.channels,
                               removed=[], values=[], macs_ratio=[])
        for fraction in fractions:
            count = min(int(round(fraction * group.channels)), group.channels - 1)
            alive = np.ones(analysis.channels.num_units, dtype=bool)
            alive[order[:count]] = False
            if count:
                sliced = slice_channels(analysis, alive)
                alive = sliced.alive
                value = _metric(evaluate(sliced.model, source, reference=seed,
                                         max_batches=eval_batches), metric)
            else:
                value = report.baseline
            row.removed.append(count)
            row.values.append(value)
            row.macs_ratio.append(expr(alive) / seed_macs if seed_macs else 1.0)
        report.groups.append(row)
    report.seconds = time.perf_counter() - start
    return report


def _label(group: GroupSensitivity) -> str:
    """The group's first layer, by the telling end of its name."""
    from onnxmorph.plot import short_name

    if not group.layers:
        return "-"
    return short_name(group.layers[0], group.layers[0].rsplit("/", 1)[-1])


def _metric(result, metric: str) -> float:
    return float(result.accuracy if metric == "accuracy" else result.agreement)
