"""AdamW vs Ranger (issue 12's optimizer axis) and constant vs cosine learning rate (issue 16).

On the ResNet sample: gates, l1 and uniform at each budget (fraction of the seed's MACs) and
seed, once with each optimizer, with bench_criteria.py's run (S structure steps for gates, F
fine-tune steps for every method, accuracy on the first E × 64 test images). Then gates at
the first budget with the constant schedule, against the cosine rows of the grid (AdamW).
Every run names its optimizer and schedule explicitly. Runs go seed by seed, the schedule
check after the first seed, and the markdown is rewritten after each run.

    python benchmarks/bench_optimizers.py       # the committed RESULTS_optimizers.md

Quick check: python benchmarks/bench_optimizers.py --budgets 0.5 --seeds 0 --steps 2 \
    --finetune-steps 2 --out /tmp/o.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import onnx
import onnxruntime

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402
from bench_criteria import Run, pct, run_one  # noqa: E402

METHODS = ("gates", "l1", "uniform")
# name → (optimizer, Ranger settings): Ranger's reference defaults, and β2 = 0.99, whose
# rectification warms up over ~200 steps instead of ~2000.
OPTIMIZERS = {"adamw": ("adamw", None), "ranger": ("ranger", None),
              "ranger-b2-0.99": ("ranger", {"beta2": 0.99})}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS),
                        default=list(OPTIMIZERS))
    parser.add_argument("--steps", type=int, default=30, help="gates' structure steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="F, every method")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=8, help="E")
    parser.add_argument("--schedule", default="cosine", help="schedule of the grid")
    parser.add_argument("--no-schedule-check", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_optimizers.md"))
    return parser.parse_args()


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _row(label: str, mine: list[Run]) -> str:
    failed = [r for r in mine if r.error]
    if failed:
        return f"| {label} | failed: {failed[0].error} | | | | |"
    mean = statistics.fmean(r.after for r in mine)
    spread = max(r.after for r in mine) - min(r.after for r in mine)
    return (f"| {label} | {' / '.join(pct(r.after_slice) for r in mine)} | "
            f"{' / '.join(pct(r.after) for r in mine)} | {100 * mean:.1f} % "
            f"(spread {100 * spread:.1f}) | "
            f"{statistics.fmean(r.macs_ratio for r in mine):.3f} | "
            f"{statistics.fmean(r.wall_s for r in mine):.0f} |")


def write_markdown(args, runs: dict, seed_accuracy: float, started: datetime, planned: int,
                   loads: list[str]) -> None:
    header = ["| method, optimizer | acc. after slice (per seed) | acc. after fine-tune "
              "(per seed) | mean after fine-tune | MACs ratio | wall s |",
              "|---|---|---|---|---|---|"]
    lines = [
        "# Optimizers (AdamW vs Ranger) and learning-rate schedules on the ResNet sample", "",
        f"- date: {started:%Y-%m-%d %H:%M}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (timings are indicative)",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- S = {args.steps} structure steps (gates), F = {args.finetune_steps} fine-tune "
        f"steps (every method), lr 2e-3 (TrainOptions' default) for both optimizers, "
        f"Ranger with its reference defaults (training/ranger.py; ranger-b2-0.99: "
        f"β2 = 0.99), schedule "
        f"{args.schedule} unless a row says otherwise; accuracy on the first "
        f"{args.eval_batches} × 64 test images; seeds {' / '.join(map(str, args.seeds))}",
        f"- runs finished: {len(runs)} of {planned}; load: {' → '.join(loads)}", "",
    ]
    for budget in args.budgets:
        rows = [_row(f"{m}, {o}", mine) for m in args.methods for o in args.optimizers
                if (mine := [r for (b, s, mm, oo, sch), r in runs.items()
                             if (b, mm, oo, sch) == (budget, m, o, args.schedule)])]
        if rows:
            lines += [f"## budget {budget:g} × seed MACs (seed accuracy "
                      f"{pct(seed_accuracy)})", "", *header, *rows, ""]
    check = [(sch, [r for (b, s, m, o, sch2), r in runs.items()
                    if (b, m, o, sch2) == (args.budgets[0], "gates", "adamw", sch)])
             for sch in ("constant", args.schedule)]
    check = [(sch, mine) for sch, mine in check if mine]
    if len(check) == 2:
        lines += [f"## learning-rate schedule: gates, AdamW, budget {args.budgets[0]:g}", "",
                  *header, *[_row(f"gates, adamw, {sch}", mine) for sch, mine in check], ""]
    Path(args.out).write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    started = datetime.now()
    base = str(ROOT / "samples/loader.py")
    analysis = analyze(str(ROOT / "samples/resnet_seed.onnx"))
    source = DataSource(base, model_input_specs(analysis.loaded.model))
    seed_accuracy = evaluate(analysis.loaded.model, source,
                             max_batches=args.eval_batches).accuracy
    plan = []
    for seed in args.seeds:
        if not args.no_schedule_check and args.schedule != "constant":
            plan.append((args.budgets[0], seed, "gates", "adamw", "constant"))
        plan += [(budget, seed, method, optimizer, args.schedule) for budget in args.budgets
                 for method in args.methods for optimizer in args.optimizers]
    runs: dict = {}
    loads = [_load().split("load average: ")[-1]]
    with tempfile.TemporaryDirectory(prefix="bench-optimizers-") as tmp:
        for key in plan:
            budget, seed, method, optimizer, schedule = key
            data = loader_for_seed(base, seed, Path(tmp), fixed=False)
            kind, ranger = OPTIMIZERS[optimizer]
            one = argparse.Namespace(**vars(args), optimizer=kind, ranger=ranger,
                                     lr_schedule=schedule)
            run = run_one(one, "resnet", analysis, budget, seed, method, data)
            runs[key] = run
            loads.append(_load().split("load average: ")[-1])
            print(f"[{len(runs)}/{len(plan)}] {key}: slice {pct(run.after_slice)} tuned "
                  f"{pct(run.after)} MACs {run.macs_ratio} wall {run.wall_s} "
                  f"{run.error or ''}", flush=True)
            write_markdown(args, runs, seed_accuracy, started, len(plan),
                           [loads[0], loads[-1]])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
