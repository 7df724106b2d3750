"""How well the latency model predicts onnxruntime: predicted vs measured, per model.

For every model: the latency table (`onnxmorph profile`, cached in benchmarks/out/latency/,
shared with bench_latency.py), then L1 and uniform at each budget with the defaults plus
both at `--target latency --budget 0.5`. For each structure: the predicted latency ratio
(pruned / seed) with the weight layers only (the old model) and with every op priced (the
current one), against the measured ratio of seed and pruned model timed interleaved in one
loop at batch 1 (ratio of the minima, and median of the per-round ratios). The seed line
compares absolute milliseconds: predicted (weight layers + other ops) and measured.

    python benchmarks/diag_latency_model.py --models resnet_sample --runs 10 --out /tmp/d.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxmorph
from onnxmorph.graph.analysis import analyze
from onnxmorph.latency.expr import latency_expr
from onnxmorph.latency.model import measured_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import MODELS, OUT, interleaved  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed rounds at batch 1")
    parser.add_argument("--out", default="/dev/stdout")
    return parser.parse_args()


def structures(budgets: list[float]) -> list[tuple[str, dict]]:
    runs = [(f"{m} b{b}", dict(method=m, budget=b)) for m in ("l1", "uniform") for b in budgets]
    return runs + [(f"{m} latency b0.5", dict(method=m, budget=0.5, target="latency"))
                   for m in ("l1", "uniform")]


def diagnose(name: str, args, lines: list[str]) -> None:
    seed = Path(MODELS[name]())
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    analysis = analyze(str(seed))
    table_path = folder / "latency_table.json"
    table, _, measured_now = measured_table(analysis, threads=args.threads,
                                            table_path=table_path)
    full = latency_expr(analysis, table)
    weights_only = latency_expr(analysis, replace(table, ops=None))
    rows, models = [], [analysis.loaded.model]
    for label, options in structures(args.budgets):
        result = onnxmorph.prune(str(seed), threads=args.threads, latency_table=table_path,
                                 verify=False, **options)
        alive = result.alive.astype(float)
        rows.append((label, result.costs["ratio"]["macs"], weights_only(alive) / weights_only(),
                     full(alive) / full()))
        models.append(result.model)
        print(f"{name} {label}: predicted {rows[-1][3]:.3f}", flush=True)
    times = interleaved_models(models, args)
    weights_ms, others_ms = full.split()
    seed_min, seed_median = times[:, 0].min(), np.median(times[:, 0])
    lines += [
        f"\n### {name} ({seed.name}, input "
        f"{'x'.join(map(str, next(iter(analysis.loaded.input_shapes.values()))))})\n",
        f"- table: {table.info.get('seconds')} s to profile "
        f"({'now' if measured_now else 'earlier'}; load average while profiling "
        f"{table.info.get('load_average')}); {len(full.fused)} ops fused into a Conv, "
        f"{len(full.layers) - full.weight_layers} other ops priced, "
        f"{len(full.unpriced)} unpriced",
        f"- seed, batch 1: predicted {weights_ms + others_ms:.2f} ms (weight layers "
        f"{weights_ms:.2f} + other ops {others_ms:.2f}); measured min {seed_min:.2f} ms, "
        f"median {seed_median:.2f} ms ({args.runs} interleaved rounds)",
        f"- 1-min load average at start / end: {load_start:.2f} / {os.getloadavg()[0]:.2f}\n",
        "| structure | MACs ratio | predicted, weight layers only | predicted, all ops | "
        "measured (minima) | measured (median of rounds) | error (all ops − minima) |",
        "|---|---|---|---|---|---|---|"]
    for index, (label, macs, old, new) in enumerate(rows, start=1):
        by_min = times[:, index].min() / seed_min
        by_median = float(np.median(times[:, index] / times[:, 0]))
        lines.append(f"| {label} | {macs:.3f} | {old:.3f} | {new:.3f} | {by_min:.3f} | "
                     f"{by_median:.3f} | {new - by_min:+.3f} |")


def interleaved_models(models: list[onnx.ModelProto], args) -> np.ndarray:
    folder = OUT / "diag_tmp"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, model in enumerate(models):
        path = folder / f"m{index}.onnx"
        onnx.save(model, str(path))
        paths.append(path)
    return interleaved(paths, 1, args.runs, args.threads)


def main() -> None:
    args = parse_args()
    began, load = datetime.now(timezone.utc), os.getloadavg()[0]
    started = time.perf_counter()
    lines: list[str] = []
    for name in args.models:
        diagnose(name, args, lines)
    header = [
        "## Latency model: predicted vs measured\n",
        f"- date: {began:%Y-%m-%d %H:%M} UTC; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other sessions; 1-min load average at start / "
        f"end: {load:.2f} / {os.getloadavg()[0]:.2f}; {time.perf_counter() - started:.0f} s",
        f"- onnx {onnx.__version__}, onnxruntime {ort.__version__}, threads {args.threads}",
        f"- command: `python benchmarks/diag_latency_model.py {' '.join(sys.argv[1:])}`",
    ]
    Path(args.out).write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
