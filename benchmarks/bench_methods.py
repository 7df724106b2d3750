"""Every method against every other (issue 12): ResNet and MobileNet samples, two budgets,
AdamW and Ranger, equal total training steps.

For every model, budget (fraction of the seed's MACs), seed, method and optimizer:
- learning methods (the registry's `learns`: gates, gdp, gamma, group-lasso) learn the
  structure for S steps and fine-tune F steps, through their registered `select`, which
  slices and evaluates the slice itself (on the whole test subset, as it reports it);
- one-shot methods (l1, uniform, taylor) select, slice (evaluated on the first E × 64 test
  images, as in RESULTS_criteria.md) and fine-tune S + F steps: the same number of training
  steps in all.
Both phases use the optimizer of the row (Ranger with its reference defaults) and the default
schedule (constant while learning the structure, cosine while fine-tuning). Accuracy after
fine-tuning is on the first E × 64 test images. The speed-up is measured in onnxruntime,
seed and result interleaved (batch 1, 1 thread, median of R runs), with the 1-min load
average beside it; "wall s" is the whole method (selection, training, slicing; learning
methods include their own evaluations). The markdown is rewritten after each run, seed by
seed, so a run cut short leaves a complete table for the first seed. Every finished run is
appended to --runs (JSON lines); runs already there are not run again, and the markdown
shows them all, so several invocations (a second seed, another method) add up to one table.

    python benchmarks/bench_methods.py --seeds 0      # then --seeds 1, --methods taylor

The header listing every invocation and the reading of RESULTS_methods.md are written by
hand: a new invocation rewrites the tables and leaves them out, so add them back.

Quick check: python benchmarks/bench_methods.py --models resnet --budgets 0.5 --seeds 0 \
    --steps 2 --finetune-steps 2 --out /tmp/m.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from onnxmorph.rewrite import slice_channels
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.evaluate import evaluate
from onnxmorph.training.trainer import TrainOptions, finetune

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402
from bench_criteria import Run, pct  # noqa: E402

METHODS = ("gates", "gdp", "gamma", "group-lasso", "l1", "uniform", "taylor")
# name → (optimizer, Ranger settings): Ranger's reference defaults, and β2 = 0.99, whose
# rectification warms up over ~200 steps instead of ~2000 (as bench_optimizers.py).
OPTIMIZER_SETTINGS = {"adamw": ("adamw", None), "ranger": ("ranger", None),
                      "ranger-b2-0.99": ("ranger", {"beta2": 0.99})}
OPTIMIZERS = tuple(OPTIMIZER_SETTINGS)


@dataclass
class MethodRun(Run):
    optimizer: str = "adamw"
    speedup: float | None = None
    load: float | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS[:6]))
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS,
                        default=list(OPTIMIZERS[:2]))
    parser.add_argument("--steps", type=int, default=30, help="structure steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=30, help="F")
    parser.add_argument("--calibration-batches", type=int, default=8, help="taylor's")
    parser.add_argument("--eval-batches", type=int, default=8, help="E")
    parser.add_argument("--latency-runs", type=int, default=30, help="R")
    parser.add_argument("--threads", type=int, default=1, help="training threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_methods.md"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks/RESULTS_methods.runs.jsonl"),
                        help="finished runs, read at the start and appended to")
    return parser.parse_args()


def _key(run: MethodRun) -> tuple:
    return run.model, run.budget, run.seed, run.method, run.optimizer


def load_runs(path: str) -> list[MethodRun]:
    if not Path(path).exists():
        return []
    return [MethodRun(**json.loads(line)) for line in Path(path).read_text().splitlines()
            if line.strip()]


def run_one(args, name: str, analysis, budget: float, seed: int, method: str, optimizer: str,
            data: str) -> MethodRun:
    run = MethodRun(name, budget, seed, method, optimizer=optimizer)
    source = DataSource(data, model_input_specs(analysis.loaded.model))
    kind, ranger = OPTIMIZER_SETTINGS[optimizer]
    training = {"steps": args.steps, "finetune_steps": args.finetune_steps, "seed": seed,
                "optimizer": kind, "threads": args.threads}
    if ranger:
        training["ranger"] = ranger
    chosen = get_method(method)
    try:
        start = time.perf_counter()
        if chosen.learns:
            selection = chosen.select(MethodInput(analysis, budget=budget, data=data,
                                                  training=training))
            run.wall_s = time.perf_counter() - start
            alive, final = selection.alive, selection.model
            run.after_slice = selection.extra["accuracy_after_slice"]
        else:
            total = args.steps + args.finetune_steps  # equal training steps
            selection = chosen.select(MethodInput(
                analysis, budget=budget, data=data, training={**training, "finetune_steps": 0},
                calibration_batches=args.calibration_batches))
            sliced = slice_channels(analysis, selection.alive)
            alive = sliced.alive
            sliced_s = time.perf_counter() - start
            run.after_slice = evaluate(sliced.model, source,
                                       max_batches=args.eval_batches).accuracy
            start = time.perf_counter()
            final = finetune(sliced.model, source,
                             TrainOptions(**{**training, "finetune_steps": total}),
                             "cross-entropy", None, total)
            run.wall_s = sliced_s + time.perf_counter() - start
        run.select_s = run.wall_s
        run.after = evaluate(final, source, max_batches=args.eval_batches).accuracy
        run.macs_ratio = analysis.cost.expr("flops")(alive) / analysis.macs
        run.load = os.getloadavg()[0]
        measured = latency_report(analysis, alive, final, threads=1,
                                  runs=args.latency_runs)["measured"]
        run.speedup = measured.get("speedup")
    except Exception as exc:  # one failed run must not lose the others
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    return run


def section(name: str, budget: float, runs: list[MethodRun], seed_accuracy: float) -> list[str]:
    lines = [f"## {name}, budget {budget:g} × seed MACs (seed accuracy {pct(seed_accuracy)})",
             "", "| method | optimizer | acc. after slice (per seed) | acc. after fine-tune "
             "(per seed) | mean after fine-tune | MACs ratio | speed-up (load) | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for optimizer in OPTIMIZERS:
            mine = [r for r in runs if r.method == method and r.optimizer == optimizer]
            if not mine:
                continue
            failed = [r for r in mine if r.error]
            if failed:
                lines.append(f"| {method} | {optimizer} | failed: {failed[0].error} "
                             "| | | | | |")
                continue
            speed = " / ".join(f"{r.speedup:.2f}× ({r.load:.1f})" if r.speedup else "–"
                               for r in mine)
            lines.append(
                f"| {method} | {optimizer} | {' / '.join(pct(r.after_slice) for r in mine)} | "
                f"{' / '.join(pct(r.after) for r in mine)} | "
                f"{100 * statistics.fmean(r.after for r in mine):.1f} % | "
                f"{statistics.fmean(r.macs_ratio for r in mine):.3f} | {speed} | "
                f"{statistics.fmean(r.wall_s for r in mine):.0f} |")
    return lines + [""]


def winners(args, runs: list[MethodRun]) -> list[str]:
    """Per model, budget and optimizer: the best mean after fine-tuning and after slicing."""
    lines = ["## Best per cell (mean over the seeds run)", "",
             "| model, budget | optimizer | best after fine-tune | best right after slicing |",
             "|---|---|---|---|"]
    for name in args.models:
        for budget in args.budgets:
            for optimizer in OPTIMIZERS:
                done = [r for r in runs if r.model == name and r.budget == budget
                        and r.optimizer == optimizer and not r.error]
                if not done:
                    continue
                by_method: dict[str, list[MethodRun]] = {}
                for r in done:
                    by_method.setdefault(r.method, []).append(r)

                lines.append(f"| {name} {budget:g} | {optimizer} | "
                             f"{_best(by_method, 'after')} | "
                             f"{_best(by_method, 'after_slice')} |")
    return lines + [""]


def _best(by_method: dict[str, list[MethodRun]], field: str) -> str:
    means = {m: statistics.fmean(getattr(r, field) for r in rs) for m, rs in by_method.items()}
    top = max(means, key=means.get)
    return f"{top} ({pct(means[top])})"


def write_markdown(args, runs: list[MethodRun], seeds: dict[str, float], started: datetime,
                   planned: int, loads: tuple[str, str]) -> None:
    seed_list = sorted({r.seed for r in runs}) or args.seeds
    lines = [
        "# Every method: gates, gdp, gamma, group-lasso, l1, uniform × AdamW, Ranger", "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with 5 other engineers' jobs (timings and speed-ups "
        "are indicative only)",
        f"- load average (1, 5, 15 min) at start → at the last run: {loads[0]} → {loads[1]}",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- S = {args.steps} structure steps + F = {args.finetune_steps} fine-tune steps for "
        f"the learning methods, S + F = {args.steps + args.finetune_steps} fine-tune steps "
        f"for the one-shot ones; lr 2e-3, schedule auto; training threads {args.threads}; "
        f"accuracy after fine-tune on the first {args.eval_batches} × 64 test images; after "
        "slice: learning methods on the whole test subset (2000, as they report it), one-shot "
        f"on the first {args.eval_batches} × 64; seeds {' / '.join(map(str, seed_list))}; "
        f"speed-up: onnxruntime, batch 1, 1 thread, median of {args.latency_runs} "
        "(1-min load average)",
        f"- runs finished: {len(runs)} of {planned} planned by this and earlier "
        f"invocations ({os.path.relpath(args.runs, ROOT)})",
        "",
    ]
    for name in args.models:
        for budget in args.budgets:
            mine = [r for r in runs if r.model == name and r.budget == budget]
            if mine:
                lines += section(name, budget, mine, seeds[name])
    lines += winners(args, runs)
    Path(args.out).write_text("\n".join(lines))


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    args = parse_args()
    started = datetime.utcnow()
    start_load = _load()
    runs = load_runs(args.runs)
    done = {_key(r) for r in runs}
    seeds: dict[str, float] = {}
    base = str(ROOT / "samples/loader.py")
    analyses = {name: analyze(str(ROOT / f"samples/{name}_seed.onnx")) for name in args.models}
    for name, analysis in analyses.items():
        source = DataSource(base, model_input_specs(analysis.loaded.model))
        seeds[name] = evaluate(analysis.loaded.model, source,
                               max_batches=args.eval_batches).accuracy
    planned = len(done | {(m, b, s, x, o) for s in args.seeds for m in args.models
                          for b in args.budgets for x in args.methods for o in args.optimizers})
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        for seed in args.seeds:
            data = loader_for_seed(base, seed, Path(tmp), fixed=False)
            for name, analysis in analyses.items():
                for budget in args.budgets:
                    for method in args.methods:
                        for optimizer in args.optimizers:
                            if (name, budget, seed, method, optimizer) in done:
                                continue
                            run = run_one(args, name, analysis, budget, seed, method,
                                          optimizer, data)
                            runs.append(run)
                            with open(args.runs, "a") as file:
                                file.write(json.dumps(dataclasses.asdict(run)) + "\n")
                            print(f"[{len(runs)}/{planned}] {name} {budget:g} s{seed} "
                                  f"{method} {optimizer}: slice {pct(run.after_slice)} tuned "
                                  f"{pct(run.after)} MACs {run.macs_ratio} speed-up "
                                  f"{run.speedup} wall {run.wall_s} {run.error or ''}",
                                  flush=True)
                            write_markdown(args, runs, seeds, started, planned,
                                           (start_load, _load()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
