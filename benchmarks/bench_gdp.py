"""GDP polarization gates on the ResNet and MobileNet samples, rows like bench_criteria.py's.

For every model, budget (fraction of the seed's MACs) and seed: learn the structure with
`--method gdp` for S steps (all weights train too), absorb the gate values, slice, fine-tune F
steps. Reported: accuracy of the gated model at the end of structure learning, accuracy right
after slicing (both on the whole test subset, as learn_structure reports them for "gates" in
RESULTS_criteria.md), the output error between them, accuracy after fine-tuning (first E
batches of 64, as in RESULTS_criteria.md), the MACs ratio, gates closed by the budget or the
rules after training (0: the budget was reached by the proximal step itself) and wall time
(structure learning, slicing, fine-tuning and gdp's three test-set passes).

    python benchmarks/bench_gdp.py            # the committed RESULTS_gdp.md

Quick check: python benchmarks/bench_gdp.py --models resnet --budgets 0.5 --seeds 0 \
    --steps 2 --finetune-steps 2 --out /tmp/g.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import onnx
import onnxruntime

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.methods.gdp import learn_polarized
from onnxmorph.methods.select import SelectionRules
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402
from bench_criteria import pct  # noqa: E402


@dataclass
class Run:
    model: str
    budget: float
    seed: int
    gated: float | None = None
    after_slice: float | None = None
    slice_error: float | None = None
    after: float | None = None
    macs_ratio: float | None = None
    forced: int | None = None
    wall_s: float | None = None
    error: str | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30, help="structure steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="F")
    parser.add_argument("--eval-batches", type=int, default=8, help="E")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_gdp.md"))
    return parser.parse_args()


def run_one(args, name: str, analysis, budget: float, seed: int, data: str) -> Run:
    run = Run(name, budget, seed)
    source = DataSource(data, model_input_specs(analysis.loaded.model))
    try:
        start = time.perf_counter()
        alive, final, extra = learn_polarized(
            analysis, data=data, target="flops", budget=budget, rules=SelectionRules(),
            steps=args.steps, finetune_steps=args.finetune_steps, seed=seed)
        run.wall_s = time.perf_counter() - start
        run.gated, run.after_slice = extra["accuracy_gated"], extra["accuracy_after_slice"]
        run.slice_error = extra["output_error_sliced_vs_gated"]
        run.forced = extra["gdp"]["closed_by_budget_or_rules"]
        run.after = evaluate(final, source, max_batches=args.eval_batches).accuracy
        run.macs_ratio = analysis.cost.expr("flops")(alive) / analysis.macs
    except Exception as exc:  # one failed run must not lose the others
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    return run


def section(name: str, budget: float, runs: list[Run], seed_accuracy: float) -> list[str]:
    lines = [f"## {name}, budget {budget:g} × seed MACs (seed accuracy {pct(seed_accuracy)})",
             "", "| seed | acc. gated | acc. after slice | rel. output error slice vs gated | "
             "acc. after fine-tune | MACs ratio | closed by rules/budget | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.error:
            lines.append(f"| {r.seed} | failed: {r.error} | | | | | | |")
            continue
        lines.append(f"| {r.seed} | {pct(r.gated)} | {pct(r.after_slice)} | "
                     f"{r.slice_error:.1e} | {pct(r.after)} | {r.macs_ratio:.3f} | {r.forced} | "
                     f"{r.wall_s:.1f} |")
    done = [r for r in runs if not r.error]
    if done:
        lines.append(f"| mean | {pct(statistics.fmean(r.gated for r in done))} | "
                     f"{pct(statistics.fmean(r.after_slice for r in done))} | | "
                     f"{pct(statistics.fmean(r.after for r in done))} | "
                     f"{statistics.fmean(r.macs_ratio for r in done):.3f} | | "
                     f"{statistics.fmean(r.wall_s for r in done):.1f} |")
    return lines + [""]


def write_markdown(args, runs: list[Run], seeds: dict[str, float], started: datetime,
                   planned: int, loads: list[str]) -> None:
    lines = [
        "# GDP polarization gates (`--method gdp`)", "",
        f"- date: {started:%Y-%m-%d %H:%M}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (timings are indicative)",
        f"- load average (1, 5, 15 min): {' → '.join(loads)}",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- S = {args.steps} structure steps, F = {args.finetune_steps} fine-tune steps, "
        f"--round-to 1 (as RESULTS_criteria.md); gated and after-slice accuracy on the whole "
        f"test subset, after fine-tune on the first {args.eval_batches} × 64 test images; "
        f"seeds {' / '.join(map(str, args.seeds))}",
        f"- runs finished: {len(runs)} of {planned}",
        "",
    ]
    for name in args.models:
        for budget in args.budgets:
            mine = [r for r in runs if r.model == name and r.budget == budget]
            if mine:
                lines += section(name, budget, mine, seeds[name])
    Path(args.out).write_text("\n".join(lines))


def load_average() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    args = parse_args()
    started = datetime.now()
    loads = [load_average()]
    runs: list[Run] = []
    seeds: dict[str, float] = {}
    base = str(ROOT / "samples/loader.py")
    analyses = {name: analyze(str(ROOT / f"samples/{name}_seed.onnx")) for name in args.models}
    for name, analysis in analyses.items():
        source = DataSource(base, model_input_specs(analysis.loaded.model))
        seeds[name] = evaluate(analysis.loaded.model, source,
                               max_batches=args.eval_batches).accuracy
    planned = len(args.seeds) * len(args.models) * len(args.budgets)
    with tempfile.TemporaryDirectory(prefix="bench-gdp-") as tmp:
        for seed in args.seeds:
            data = loader_for_seed(base, seed, Path(tmp), fixed=False)
            for name, analysis in analyses.items():
                for budget in args.budgets:
                    run = run_one(args, name, analysis, budget, seed, data)
                    runs.append(run)
                    print(f"[{len(runs)}/{planned}] {name} {budget:g} s{seed}: gated "
                          f"{pct(run.gated)} slice {pct(run.after_slice)} tuned "
                          f"{pct(run.after)} MACs {run.macs_ratio} wall {run.wall_s} "
                          f"{run.error or ''}", flush=True)
                    write_markdown(args, runs, seeds, started, planned,
                                   [*loads, load_average()])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
