"""morph-net's Gamma and GroupLasso FLOPs regularizers on the ResNet and MobileNet samples.

The same protocol as bench_criteria.py (whose helpers this imports): for every model, budget
(fraction of the seed's MACs), seed and method, learn the structure for S steps with the
regularizer (all weights train, λ from the budget controller), select to the budget, slice
the trained weights, evaluate ("after slice"), fine-tune F steps, evaluate again. "select s"
= "wall s" is the whole method (it evaluates the seed, the slice and the result inside, like
gates in RESULTS_criteria.md). The speed-up is measured in onnxruntime, seed and result
interleaved (batch 1, 1 thread, median of R runs); the load average is recorded beside it.

    python benchmarks/bench_regularizers.py          # the committed RESULTS_regularizers.md

Quick check: python benchmarks/bench_regularizers.py --models resnet --budgets 0.5 \
    --seeds 0 --steps 2 --finetune-steps 2 --out /tmp/r.md
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
from onnxmorph.latency.report import latency_report
from onnxmorph.methods.registry import MethodInput, get_method
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402
from bench_criteria import Run, pct  # noqa: E402

METHODS = ("gamma", "group-lasso")


@dataclass
class TimedRun(Run):
    speedup: float | None = None
    load: float | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=30, help="structure steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="F")
    parser.add_argument("--eval-batches", type=int, default=8, help="E")
    parser.add_argument("--latency-runs", type=int, default=50, help="R")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_regularizers.md"))
    return parser.parse_args()


def run_one(args, name: str, analysis, budget: float, seed: int, method: str,
            data: str) -> TimedRun:
    run = TimedRun(name, budget, seed, method)
    source = DataSource(data, model_input_specs(analysis.loaded.model))
    training = {"steps": args.steps, "finetune_steps": args.finetune_steps, "seed": seed}
    try:
        start = time.perf_counter()
        selection = get_method(method).select(MethodInput(analysis, budget=budget, data=data,
                                                          training=training))
        run.wall_s = run.select_s = time.perf_counter() - start
        run.after_slice = selection.extra["accuracy_after_slice"]
        run.after = evaluate(selection.model, source, max_batches=args.eval_batches).accuracy
        run.macs_ratio = analysis.cost.expr("flops")(selection.alive) / analysis.macs
        run.load = os.getloadavg()[0]
        measured = latency_report(analysis, selection.alive, selection.model, threads=1,
                                  runs=args.latency_runs)["measured"]
        run.speedup = measured.get("speedup")
    except Exception as exc:  # one failed run must not lose the others
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    return run


def section(name: str, budget: float, runs: list[TimedRun], seed_accuracy: float) -> list[str]:
    lines = [f"## {name}, budget {budget:g} × seed MACs (seed accuracy {pct(seed_accuracy)})",
             "", "| method | acc. after slice (per seed) | acc. after fine-tune (per seed) | "
             "mean after fine-tune | MACs ratio | speed-up (load) | wall s |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        if not mine:
            continue
        failed = [r for r in mine if r.error]
        if failed:
            lines.append(f"| {method} | failed: {failed[0].error} | | | | | |")
            continue
        speed = " / ".join(f"{r.speedup:.2f}× ({r.load:.1f})" if r.speedup else "–"
                           for r in mine)
        lines.append(
            f"| {method} | {' / '.join(pct(r.after_slice) for r in mine)} | "
            f"{' / '.join(pct(r.after) for r in mine)} | "
            f"{100 * statistics.fmean(r.after for r in mine):.1f} % | "
            f"{statistics.fmean(r.macs_ratio for r in mine):.3f} | {speed} | "
            f"{statistics.fmean(r.wall_s for r in mine):.1f} |")
    return lines + [""]


def write_markdown(args, runs: list[TimedRun], seeds: dict[str, float], started: datetime,
                   planned: int) -> None:
    lines = [
        "# morph-net regularizers: gamma and group-lasso", "",
        f"- date: {started:%Y-%m-%d %H:%M}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (timings are indicative)",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- S = {args.steps} structure steps, F = {args.finetune_steps} fine-tune steps, "
        f"AdamW, accuracy on the first {args.eval_batches} × 64 test images, seeds "
        f"{' / '.join(map(str, args.seeds))}; speed-up: onnxruntime, batch 1, 1 thread, "
        f"seed and result interleaved, median of {args.latency_runs} (1-min load average)",
        f"- runs finished: {len(runs)} of {planned}",
        "",
    ]
    for name in args.models:
        for budget in args.budgets:
            mine = [r for r in runs if r.model == name and r.budget == budget]
            if mine:
                lines += section(name, budget, mine, seeds[name])
    Path(args.out).write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    started = datetime.now()
    runs: list[TimedRun] = []
    seeds: dict[str, float] = {}
    base = str(ROOT / "samples/loader.py")
    analyses = {name: analyze(str(ROOT / f"samples/{name}_seed.onnx")) for name in args.models}
    for name, analysis in analyses.items():
        source = DataSource(base, model_input_specs(analysis.loaded.model))
        seeds[name] = evaluate(analysis.loaded.model, source,
                               max_batches=args.eval_batches).accuracy
    planned = len(args.seeds) * len(args.models) * len(args.budgets) * len(args.methods)
    with tempfile.TemporaryDirectory(prefix="bench-regularizers-") as tmp:
        for seed in args.seeds:
            data = loader_for_seed(base, seed, Path(tmp), fixed=False)
            for name, analysis in analyses.items():
                for budget in args.budgets:
                    for method in args.methods:
                        run = run_one(args, name, analysis, budget, seed, method, data)
                        runs.append(run)
                        print(f"[{len(runs)}/{planned}] {name} {budget:g} s{seed} {method}: "
                              f"slice {pct(run.after_slice)} tuned {pct(run.after)} MACs "
                              f"{run.macs_ratio} speed-up {run.speedup} wall {run.wall_s} "
                              f"{run.error or ''}", flush=True)
                        write_markdown(args, runs, seeds, started, planned)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
