"""One-shot criteria against L1 and learned gates, on the ResNet and MobileNet samples.

For every model, budget (fraction of the seed's MACs), seed and method: rank channels (l1,
fpgm: weights only; apoz, activation, taylor: C calibration batches of samples/loader.py),
select to the budget with the shared selection, slice, evaluate ("after slice"), fine-tune F
steps, evaluate again. "gates" learns the structure for S steps (all weights train too), then
fine-tunes F steps. "select s" is ranking + selection (calibration included); "wall s" adds
slicing and fine-tuning; evaluations are not counted, except for gates, whose learn_structure
evaluates the seed, the sliced and the final model inside (3 test-set passes, counted).

Accuracy is on the first E batches of eval_batches() (64 images each). The seed is the
training seed and the loader's shuffle seed (BASE_SEED), so calibration batches differ too.
A sensitivity picture (one group at a time, by --sensitivity-method) is drawn for the ResNet
first; the runs go seed by seed, and the markdown is rewritten after each run.

    python benchmarks/bench_criteria.py            # the committed RESULTS_criteria.md

Quick check: python benchmarks/bench_criteria.py --models resnet --budgets 0.5 --seeds 0 \
    --finetune-steps 2 --steps 2 --out /tmp/r.md --picture /tmp/s.png
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
from onnxmorph.methods.registry import MethodInput, get_method
from onnxmorph.methods.select import SelectionRules
from onnxmorph.rewrite import slice_channels
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.evaluate import evaluate
from onnxmorph.training.trainer import TrainOptions, finetune

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402

METHODS = ("l1", "fpgm", "apoz", "activation", "taylor", "gates")


@dataclass
class Run:
    model: str
    budget: float
    seed: int
    method: str
    after_slice: float | None = None
    after: float | None = None
    macs_ratio: float | None = None
    select_s: float | None = None
    wall_s: float | None = None
    error: str | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=30, help="gates' structure steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="F, every method")
    parser.add_argument("--calibration-batches", type=int, default=8, help="C")
    parser.add_argument("--eval-batches", type=int, default=8, help="E")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd", "ranger"])
    parser.add_argument("--lr-schedule", default=None, help="default: TrainOptions' default")
    parser.add_argument("--sensitivity-method", default="taylor")
    parser.add_argument("--picture", default=str(ROOT / "benchmarks/sensitivity_resnet.png"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_criteria.md"))
    return parser.parse_args()


def run_one(args, name: str, analysis, budget: float, seed: int, method: str,
            data: str) -> Run:
    run = Run(name, budget, seed, method)
    source = DataSource(data, model_input_specs(analysis.loaded.model))
    training = {"steps": args.steps, "finetune_steps": args.finetune_steps, "seed": seed,
                "optimizer": args.optimizer}
    if args.lr_schedule:
        training["lr_schedule"] = args.lr_schedule
    if getattr(args, "ranger", None):  # RangerSettings fields (bench_optimizers.py)
        training["ranger"] = args.ranger
    try:
        start = time.perf_counter()
        if method == "gates":
            from onnxmorph.methods.gated import learn_structure

            alive, final, extra = learn_structure(analysis, data=data, target="flops",
                                                  budget=budget, rules=SelectionRules(),
                                                  **training)
            run.wall_s = run.select_s = time.perf_counter() - start
            run.after_slice = extra["accuracy_after_slice"]
            run.after = evaluate(final, source, max_batches=args.eval_batches).accuracy
        else:
            request = MethodInput(analysis, budget=budget, data=data, training=training,
                                  calibration_batches=args.calibration_batches)
            alive = get_method(method).select(request).alive
            run.select_s = time.perf_counter() - start
            sliced = slice_channels(analysis, alive)
            alive = sliced.alive
            sliced_s = time.perf_counter() - start
            run.after_slice = evaluate(sliced.model, source,
                                       max_batches=args.eval_batches).accuracy
            start = time.perf_counter()
            options = TrainOptions(**{**training, "steps": max(args.steps, 1)})
            final = finetune(sliced.model, source, options, "cross-entropy", None,
                             args.finetune_steps)
            run.wall_s = sliced_s + time.perf_counter() - start
            run.after = evaluate(final, source, max_batches=args.eval_batches).accuracy
        run.macs_ratio = analysis.cost.expr("flops")(alive) / analysis.macs
    except Exception as exc:  # one failed run must not lose the others
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    return run


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def section(name: str, budget: float, runs: list[Run], seed_accuracy: float) -> list[str]:
    lines = [f"## {name}, budget {budget:g} × seed MACs (seed accuracy {pct(seed_accuracy)})",
             "", "| method | acc. after slice (per seed) | acc. after fine-tune (per seed) | "
             "mean after fine-tune | MACs ratio | select s | wall s |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        if not mine:
            continue
        failed = [r for r in mine if r.error]
        if failed:
            lines.append(f"| {method} | failed: {failed[0].error} | | | | | |")
            continue
        mean = statistics.fmean(r.after for r in mine)
        lines.append(
            f"| {method} | {' / '.join(pct(r.after_slice) for r in mine)} | "
            f"{' / '.join(pct(r.after) for r in mine)} | {100 * mean:.1f} % | "
            f"{statistics.fmean(r.macs_ratio for r in mine):.3f} | "
            f"{statistics.fmean(r.select_s for r in mine):.1f} | "
            f"{statistics.fmean(r.wall_s for r in mine):.1f} |")
    return lines + [""]


def write_markdown(args, runs: list[Run], seeds: dict[str, float], started: datetime,
                   picture: str | None, planned: int) -> None:
    lines = [
        "# One-shot criteria vs L1 vs learned gates", "",
        f"- date: {started:%Y-%m-%d %H:%M}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (timings are indicative)",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- F = {args.finetune_steps} fine-tune steps (every method), S = {args.steps} "
        f"structure steps (gates), C = {args.calibration_batches} calibration batches, "
        f"accuracy on the first {args.eval_batches} × 64 test images, seeds "
        f"{' / '.join(map(str, args.seeds))}",
        f"- runs finished: {len(runs)} of {planned}",
        "",
    ]
    for name in args.models:
        for budget in args.budgets:
            mine = [r for r in runs if r.model == name and r.budget == budget]
            if mine:
                lines += section(name, budget, mine, seeds[name])
    if picture:
        lines += [f"Sensitivity of the ResNet sample ({args.sensitivity_method}, one group at "
                  f"a time): `{os.path.relpath(picture, ROOT)}`", ""]
    Path(args.out).write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    started = datetime.now()
    runs: list[Run] = []
    seeds: dict[str, float] = {}
    base = str(ROOT / "samples/loader.py")
    picture = None
    if args.picture:
        report = onnxmorph.sensitivity(str(ROOT / "samples/resnet_seed.onnx"), data=base,
                                       method=args.sensitivity_method,
                                       eval_batches=args.eval_batches)
        print(report.table(), flush=True)
        picture = args.picture if report.write_plot(args.picture) else None
    analyses = {name: analyze(str(ROOT / f"samples/{name}_seed.onnx")) for name in args.models}
    for name, analysis in analyses.items():
        source = DataSource(base, model_input_specs(analysis.loaded.model))
        seeds[name] = evaluate(analysis.loaded.model, source,
                               max_batches=args.eval_batches).accuracy
    planned = len(args.seeds) * len(args.models) * len(args.budgets) * len(args.methods)
    # Seed-major order: a run cut short still has every cell for the first seed.
    with tempfile.TemporaryDirectory(prefix="bench-criteria-") as tmp:
        for seed in args.seeds:
            data = loader_for_seed(base, seed, Path(tmp), fixed=False)
            for name, analysis in analyses.items():
                for budget in args.budgets:
                    for method in args.methods:
                        run = run_one(args, name, analysis, budget, seed, method, data)
                        runs.append(run)
                        print(f"[{len(runs)}/{planned}] {name} {budget:g} s{seed} {method}: "
                              f"slice {pct(run.after_slice)} tuned {pct(run.after)} MACs "
                              f"{run.macs_ratio} select {run.select_s} wall {run.wall_s} "
                              f"{run.error or ''}", flush=True)
                        write_markdown(args, runs, seeds, started, picture, planned)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
