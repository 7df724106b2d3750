"""The picture of a sweep: accuracy against cost for every run, the Pareto front drawn as a
line, one marker per seed. matplotlib is optional, as for the structure plot."""

from __future__ import annotations

import io
import os

from onnxmorph.io import write_atomic
from onnxmorph.plot import SKIP_NOTE

_MARKERS = "osD^vP*Xh<>"


def write_pareto_plot(result, path: str | os.PathLike) -> os.PathLike | str:
    """Draw `result` (a SweepResult) to a PNG at `path`; return the path, or why not."""
    try:
        import matplotlib  # noqa: F401  (first: a blocked `matplotlib` must stop it all)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return SKIP_NOTE
    runs = [r for r in result.runs if r["quality"] is not None and r["cost"] is not None]
    # The fraction of the seed's cost reads like the budgets; absolute cost when unknown.
    use_ratio = bool(runs) and all(r["cost_ratio"] is not None for r in runs)
    x_of = (lambda r: r["cost_ratio"]) if use_ratio else (lambda r: r["cost"])
    figure = Figure(figsize=(6.4, 4.4), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    seeds = sorted({r["seed"] for r in runs})
    for index, seed in enumerate(seeds):
        for on_front in (False, True):
            points = [r for r in runs if r["seed"] == seed and r["on_front"] == on_front]
            if not points:
                continue
            ax.scatter([x_of(r) for r in points], [r["quality"] for r in points],
                       marker=_MARKERS[index % len(_MARKERS)], s=46 if on_front else 34,
                       color="#d1603d" if on_front else "#b0b7c3",
                       edgecolors="#333333" if on_front else "none", zorder=3,
                       label=f"seed {seed}" + (" (front)" if on_front else ""))
    front = sorted(result.front, key=x_of)
    if front:
        # A staircase: up to the next front point, the best reachable quality stays flat.
        ax.plot([x_of(r) for r in front], [r["quality"] for r in front], "-", color="#d1603d",
                drawstyle="steps-post", zorder=2, label="Pareto front")
    for r in runs:
        ax.annotate(f"{r['budget']:g}", (x_of(r), r["quality"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color="#555555")
    cost = {"macs": "MACs"}.get(result.cost, result.cost)
    ax.set_xlabel(f"{cost} (fraction of seed)" if use_ratio else cost)
    ax.set_ylabel(result.quality.replace("_", " "))
    failed = sum(r["status"] == "failed" for r in result.runs)
    ax.set_title(f"Sweep: {len(runs)} runs, {len(front)} on the front"
                 + (f", {failed} failed" if failed else "") + " (labels: budget)")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return path
