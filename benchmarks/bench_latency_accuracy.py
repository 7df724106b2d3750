"""Accuracy of gates with --target latency vs --target flops at equal measured latency.

Issue #8's comparison on the ResNet sample (samples/resnet_seed.onnx, samples/loader.py). For
every seed:

1. gates --target flops --budget B (S structure-learning steps, F fine-tune steps);
2. its latency ratio r (pruned / seed) measured in onnxruntime CPU, seed and model run
   interleaved (batch 1, --threads intra-op threads, median of the per-round ratios);
3. gates --target latency --budget r (measured latency table, profiled once and kept in
   --models-dir; same S and F);
4. seed, flops model and latency model timed again, interleaved in one loop, so both pruned
   models' ratios come from the same rounds; that is the "measured latency ratio" reported.

The latency table predicts the weight layers and the ops between them, not everything
onnxruntime does, so the latency-targeted model's measured ratio can differ from r: the
table shows both models' measured ratios side by side (and the predicted ones; the flops run
also gets the table so that its report prices it). The seed goes into the gate noise and the
loader's shuffle exactly as in bench_accuracy.py.

`--match predicted` sets the latency run's budget to the flops model's ratio as the table
predicts it instead (timing noise cannot move it; `--reuse-flops` takes the flops models of an
earlier run from runs.jsonl), and `--retime` trains nothing but times the seed and every model
of runs.jsonl in one loop at batch 1 and 32 (read that table: the per-pair timings of the
training runs are taken while the machine's load changes).

    python benchmarks/bench_latency_accuracy.py                       # 2 seeds, defaults
    python benchmarks/bench_latency_accuracy.py --match predicted --reuse-flops
    python benchmarks/bench_latency_accuracy.py --retime --rounds 3000

The defaults (S = F = 200, 4 gates runs) took 25 min at load average ~15; a run took
90-150 s at load ~2-5 on the 2-core machine (2026-12-08).
    python benchmarks/bench_latency_accuracy.py --steps 5 --finetune-steps 5 --seeds 0 \
        --out /tmp/r.md --models-dir /tmp/lat_acc                      # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxmorph
from onnxmorph.graph.analysis import analyze
from onnxmorph.latency.measure import interleaved_ms
from onnxmorph.latency.model import measured_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import loader_for_seed  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "samples/resnet_seed.onnx"))
    parser.add_argument("--data", default=str(ROOT / "samples/loader.py"))
    parser.add_argument("--budget", type=float, default=0.5, help="the flops run's MACs budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=200, help="structure-learning steps (S)")
    parser.add_argument("--finetune-steps", type=int, default=200, help="fine-tune steps (F)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1000,
                        help="interleaved timing rounds at batch 1 (the sample is tiny)")
    parser.add_argument("--match", choices=("measured", "predicted"), default="measured",
                        help="the latency run's budget: the flops model's measured latency "
                             "ratio, or its ratio predicted by the table (free of timing noise)")
    parser.add_argument("--reuse-flops", action="store_true",
                        help="take each seed's flops model from --models-dir's runs.jsonl "
                             "instead of training it again")
    parser.add_argument("--retime", action="store_true",
                        help="train nothing: time the seed and every model of --models-dir's "
                             "runs.jsonl in one interleaved loop at batch 1 and 32, and append "
                             "that table to --out")
    parser.add_argument("--models-dir", default=str(ROOT / "benchmarks/out/latency_accuracy"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_latency_accuracy.md"))
    return parser.parse_args()


def interleaved_ratios(paths: list[Path], rounds: int, threads: int,
                       batch: int = 1) -> list[dict]:
    """Per model after the first (the seed): median [IQR] of per-round model/seed latency
    ratios, and the ratio of the fastest runs; models run in turn, one warm-up round."""
    times = interleaved_ms([onnx.load(str(p)).SerializeToString() for p in paths], batch,
                           threads, runs=rounds, warmup=1)
    out = []
    for i in range(1, len(paths)):
        ratios = times[:, i] / times[:, 0]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        out.append({"median": float(med), "q1": float(q1), "q3": float(q3),
                    "of_minima": float(times[:, i].min() / times[:, 0].min()),
                    "ms": float(np.median(times[:, i])), "seed_ms": float(np.median(times[:, 0]))})
    return out


def prune_one(args, seed: int, data: str, target: str, budget: float, table: Path,
              path: Path) -> dict:
    start = time.perf_counter()
    result = onnxmorph.prune(args.model, method="gates", target=target, budget=budget,
                             data=data, threads=args.threads, latency_table=table,
                             training={"steps": args.steps, "finetune_steps": args.finetune_steps,
                                       "seed": seed})
    wall = time.perf_counter() - start
    result.save(path)
    report = result.report()
    return {"seed": seed, "target": target, "budget": budget, "path": str(path),
            "accuracy_before": report.get("accuracy_before"),
            "accuracy_after_slice": report.get("accuracy_after_slice"),
            "accuracy_after": report.get("accuracy_after"),
            "macs_ratio": report["ratio"]["macs"], "params_ratio": report["ratio"]["params"],
            "predicted_latency_ratio": result.extra.get("latency", {}).get("predicted", {})
            .get("ratio"), "wall_s": wall}


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def write_markdown(args, runs: list[dict], started: datetime, load_start: float,
                   profile_note: str) -> None:
    lines = [
        "# Gates: --target latency vs --target flops at equal measured latency (issue #8)", "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs **shared with other sessions (loaded)**; 1-min load average "
        f"at start / now: {load_start:.2f} / {os.getloadavg()[0]:.2f}",
        f"- onnx {onnx.__version__}, onnxruntime {ort.__version__}, onnxmorph "
        f"{onnxmorph.__version__}, threads {args.threads}",
        f"- command: `python benchmarks/bench_latency_accuracy.py {' '.join(sys.argv[1:])}`"
        .rstrip(),
        f"- model `{os.path.relpath(args.model, ROOT)}`, data `{os.path.relpath(args.data, ROOT)}`"
        f"; gates with S = {args.steps} structure-learning + F = {args.finetune_steps} fine-tune "
        "steps for both targets, batch 64; accuracy on the 2000-image test subset",
        f"- flops run at --budget {args.budget:g}; its measured latency ratio r becomes the "
        "latency run's --budget; latency table: " + profile_note,
        f"- measured latency ratio = pruned / seed at batch 1, median of {args.rounds} "
        "interleaved rounds [IQR], seed and both pruned models in one loop; 'of minima' = "
        "fastest pruned run / fastest seed run",
        "",
        "| seed | target | --budget | acc. after slice | acc. after fine-tune | MACs ratio | "
        "predicted latency ratio | measured latency ratio [IQR] | of minima | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run.get("error"):
            lines.append(f"| {run['seed']} | {run['target']} | {run['budget']:.3f} | failed: "
                         f"{run['error']} | | | | | | |")
            continue
        m = run.get("measured")
        measured = (f"{m['median']:.3f} [{m['q1']:.3f}, {m['q3']:.3f}]" if m else "not timed")
        pred = run["predicted_latency_ratio"]
        minima = f"{m['of_minima']:.3f}" if m else "–"
        lines.append(
            f"| {run['seed']} | {run['target']} | {run['budget']:.3f} | "
            f"{pct(run['accuracy_after_slice'])} | {pct(run['accuracy_after'])} | "
            f"{run['macs_ratio']:.3f} | {'–' if pred is None else f'{pred:.3f}'} | "
            f"{measured} | {minima} | {run['wall_s']:.0f} |")
    lines.append("")
    means = {}
    for target in dict.fromkeys(r["target"] for r in runs):
        done = [r for r in runs if r["target"] == target and r.get("accuracy_after") is not None
                and r.get("measured")]
        if done:
            means[target] = (statistics.fmean(r["accuracy_after"] for r in done),
                             statistics.fmean(r["measured"]["median"] for r in done),
                             statistics.fmean(r["macs_ratio"] for r in done), len(done))
    if means:
        lines += ["| target | runs | mean acc. after fine-tune | mean measured latency ratio | "
                  "mean MACs ratio |", "|---|---|---|---|---|"]
        for target, (acc, lat, macs, n) in means.items():
            lines.append(f"| {target} | {n} | {100 * acc:.2f} % | {lat:.3f} | {macs:.3f} |")
        lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


def retime(args) -> None:
    """All pruned models of runs.jsonl (the latest run of each seed and target) and the seed
    in one loop: more rounds, and batch 32 where compute, not per-op overhead, dominates."""
    latest: dict[tuple, dict] = {}
    for line in (Path(args.models_dir) / "runs.jsonl").read_text().splitlines():
        run = json.loads(line)
        latest[(run["seed"], run["target"])] = run
    runs = [latest[k] for k in sorted(latest)]
    paths = [Path(args.model)] + [Path(r["path"]) for r in runs]
    load = os.getloadavg()[0]
    lines = ["", f"## Re-timed: seed and all {len(runs)} pruned models in one loop", "",
             f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, command `python "
             f"benchmarks/bench_latency_accuracy.py {' '.join(sys.argv[1:])}`; 1-min load "
             f"average {load:.2f} at start",
             "", "| seed | target | acc. after fine-tune | MACs ratio | batch | measured latency "
             "ratio [IQR] | of minima | ms median (seed) |", "|---|---|---|---|---|---|---|---|"]
    for batch, rounds in ((1, args.rounds), (32, max(20, args.rounds // 10))):
        for run, m in zip(runs, interleaved_ratios(paths, rounds, args.threads, batch)):
            lines.append(f"| {run['seed']} | {run['target']} | {pct(run['accuracy_after'])} | "
                         f"{run['macs_ratio']:.3f} | {batch} ({rounds} rounds) | "
                         f"{m['median']:.3f} [{m['q1']:.3f}, {m['q3']:.3f}] | "
                         f"{m['of_minima']:.3f} | {m['ms']:.3f} ({m['seed_ms']:.3f}) |")
    lines.append(f"\n1-min load average at the end: {os.getloadavg()[0]:.2f}\n")
    with open(args.out, "a") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    args = parse_args()
    if args.retime:
        retime(args)
        return
    models_dir = Path(args.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    started, load_start = datetime.now(timezone.utc), os.getloadavg()[0]
    table_path = models_dir / "latency_table.json"
    began = time.perf_counter()
    table, _, measured = measured_table(analyze(args.model), threads=args.threads,
                                        table_path=table_path)
    profile_note = (f"{table.info.get('layers')} layers, {table.info.get('seconds')} s "
                    f"({'measured now' if measured else 'from an earlier run'}, "
                    f"{time.perf_counter() - began:.0f} s here)")
    print(f"profile: {profile_note}", flush=True)
    stem = Path(args.model).stem
    runs: list[dict] = []
    earlier: dict[tuple, dict] = {}
    if args.reuse_flops and (models_dir / "runs.jsonl").exists():
        for line in (models_dir / "runs.jsonl").read_text().splitlines():
            run = json.loads(line)
            earlier[(run["seed"], run["target"])] = run
    second = "latency" if args.match == "measured" else "latency=pred"
    with tempfile.TemporaryDirectory(prefix="bench-lat-acc-") as tmp:
        for seed in args.seeds:
            data = loader_for_seed(args.data, seed, Path(tmp), False)
            pair: list[dict] = []
            budget = args.budget
            for label in ("flops", second):
                target = label.split("=")[0]
                path = models_dir / f"{stem}-gates-{label.replace('=', '-')}-s{seed}.onnx"
                try:
                    if label == "flops" and (seed, "flops") in earlier:
                        run = {k: v for k, v in earlier[(seed, "flops")].items()
                               if k not in ("command", "measured")}
                    else:
                        run = prune_one(args, seed, data, target, budget, table_path, path)
                        run["target"] = label
                except Exception as exc:  # record and go on: keep the other seeds' runs
                    traceback.print_exc()
                    runs.append({"seed": seed, "target": label, "budget": budget,
                                 "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
                    break
                pair.append(run)
                runs.append(run)
                if label == "flops" and args.match == "predicted":
                    budget = run["predicted_latency_ratio"]
                elif label == "flops":  # its measured ratio is the latency run's budget
                    first = interleaved_ratios([Path(args.model), Path(run["path"])],
                                               args.rounds, args.threads)[0]
                    run["first_measured"] = first
                    budget = min(1.0, first["median"])
                print(f"seed {seed} {label} b{run['budget']:.3f}: acc "
                      f"{pct(run['accuracy_after'])}, MACs {run['macs_ratio']:.3f}, predicted "
                      f"latency {run['predicted_latency_ratio']}, {run['wall_s']:.0f} s",
                      flush=True)
                write_markdown(args, runs, started, load_start, profile_note)
            if len(pair) == 2:  # both in the same rounds: their ratios are comparable
                timed = interleaved_ratios([Path(args.model)] + [Path(r["path"]) for r in pair],
                                           args.rounds, args.threads)
                for run, measured_ratio in zip(pair, timed):
                    run["measured"] = measured_ratio
            with open(models_dir / "runs.jsonl", "a") as handle:
                for run in pair:
                    handle.write(json.dumps({"command": " ".join(sys.argv), **run}) + "\n")
            write_markdown(args, runs, started, load_start, profile_note)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
