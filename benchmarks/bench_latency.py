"""Realised vs ideal speed-up of pruned models in onnxruntime CPU, with the default settings.

For every model: `onnxmorph profile` (timed), then `onnxmorph.prune` with --method l1 and
uniform at each budget with the defaults (--round-to auto), l1 at 0.5 with --round-to 1 (the
old default, for contrast), and l1/uniform with --target latency (measured table) at 0.5.
Seed and all pruned models are then timed interleaved in one loop (seed, m1, m2, …, seed,
m1, …) so load from other processes hits them alike, at batch 1 and batch 32: CPU execution
provider, ORT_ENABLE_ALL, sequential, --threads intra-op threads, random float32 inputs.
Speed-up = median of the per-round seed/model ratios with their inter-quartile range, and
the ratio of the fastest runs (least disturbed by load). Ideal speed-up = 1 / MACs ratio.

    python benchmarks/bench_latency.py                       # everything (~30-40 min loaded)
    python benchmarks/bench_latency.py --models resnet_sample --runs 5 --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
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
OUT = ROOT / "benchmarks" / "out" / "latency"
sys.path.insert(0, str(ROOT / "benchmarks"))
from latency_models import random_mobilenetv2, random_resnet50  # noqa: E402

MODELS = {
    "resnet50": lambda: random_resnet50(ROOT / "benchmarks/out/resnet50_random.onnx"),
    "mobilenetv2": lambda: random_mobilenetv2(ROOT / "benchmarks/out/mobilenetv2_random.onnx"),
    "resnet_sample": lambda: ROOT / "samples/resnet_seed.onnx",
    "mobilenet_sample": lambda: ROOT / "samples/mobilenet_seed.onnx",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15, help="timed rounds at batch 1")
    parser.add_argument("--runs-b32", type=int, default=4, help="timed rounds at batch 32")
    parser.add_argument("--b32-budgets", type=float, nargs="*",
                        help="time batch 32 only for structures at these budgets (ResNet-50 "
                             "at batch 32 takes seconds per run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_latency.md"))
    return parser.parse_args()


def variants(budgets: list[float]) -> list[tuple[str, dict]]:
    runs = [(f"{m} b{b}", dict(method=m, budget=b)) for m in ("l1", "uniform") for b in budgets]
    runs.append(("l1 b0.5 round-to 1", dict(method="l1", budget=0.5, round_to=1)))
    runs += [(f"{m} latency b0.5", dict(method=m, budget=0.5, target="latency"))
             for m in ("l1", "uniform")]
    return runs


def interleaved(paths: list[Path], batch: int, rounds: int, threads: int) -> np.ndarray:
    """[rounds, models] milliseconds, one warm-up round first."""
    return interleaved_ms([onnx.load(str(p)).SerializeToString() for p in paths], batch,
                          threads, runs=rounds, warmup=1)


def bench_model(name: str, args, lines: list[str]) -> None:
    seed = MODELS[name]()
    if not Path(seed).exists():
        lines.append(f"\n{name}: {seed} not found, skipped\n")
        return
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    analysis = analyze(str(seed))
    load_start = os.getloadavg()[0]
    table_path = folder / "latency_table.json"
    began = time.perf_counter()
    table, _, measured = measured_table(analysis, threads=args.threads, table_path=table_path)
    profile_s = time.perf_counter() - began
    print(f"{name}: profile {profile_s:.0f} s ({table.info})", flush=True)
    rows, paths = [], [Path(seed)]
    for label, options in variants(args.budgets):
        result = onnxmorph.prune(str(seed), threads=args.threads, latency_table=table_path,
                                 **options)
        path = folder / (label.replace(" ", "_") + ".onnx")
        onnx.save(result.model, str(path))
        latency = result.extra.get("latency", {}).get("predicted", {})
        rows.append((label, result.costs["ratio"]["macs"], latency.get("ratio")))
        paths.append(path)
        print(f"  {label}: MACs {rows[-1][1]:.3f}, predicted latency {rows[-1][2]:.3f}",
              flush=True)
    timings = {}
    for batch, rounds in ((1, args.runs), (32, args.runs_b32)):
        chosen = [0] + [i + 1 for i, (label, _) in enumerate(variants(args.budgets))
                        if batch == 1 or args.b32_budgets is None
                        or any(f"b{b}" in label.split() for b in args.b32_budgets)]
        try:
            times = interleaved([paths[i] for i in chosen], batch, rounds, args.threads)
        except Exception as exc:  # noqa: BLE001 - a fixed-batch export: report, go on
            print(f"  batch {batch}: {exc}", flush=True)
            continue
        timings[batch] = np.full((rounds, len(paths)), np.nan)
        timings[batch][:, chosen] = times
    state = "measured now" if measured else "from an earlier run"
    lines += [f"\n### {name} ({Path(seed).name}, input "
              f"{'x'.join(map(str, next(iter(analysis.loaded.input_shapes.values()))))})\n",
              f"profile: {table.info.get('layers')} layers, {table.info.get('configs')} "
              f"configurations, {table.info.get('measurements')} measurements, "
              f"{table.info.get('other_ops')} other ops, {table.info.get('seconds')} s "
              f"({state}; load average while profiling {table.info.get('load_average')}); "
              f"1-min load average while timing: {load_start:.2f} → {os.getloadavg()[0]:.2f}.\n",
              "| structure | MACs ratio | predicted latency ratio | b1 ms median (seed) | "
              "speed-up b1 median [IQR] | speed-up b1 of minima | b32 ms median (seed) | "
              "speed-up b32 median [IQR] | speed-up b32 of minima | ideal | "
              "b1 realised/ideal |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, (label, macs, predicted) in enumerate(rows, start=1):
        cells = [label, f"{macs:.3f}", f"{predicted:.3f}" if predicted else "-"]
        realised = None
        for batch in (1, 32):
            if batch not in timings or np.isnan(timings[batch][0, i]):
                cells += ["not timed"] * 3
                continue
            t = timings[batch]
            ratios = t[:, 0] / t[:, i]
            q1, med, q3 = np.percentile(ratios, [25, 50, 75])
            cells += [f"{np.median(t[:, i]):.2f} ({np.median(t[:, 0]):.2f})",
                      f"{med:.2f}× [{q1:.2f}, {q3:.2f}]",
                      f"{t[:, 0].min() / t[:, i].min():.2f}×"]
            realised = med if batch == 1 else realised
        cells += [f"{1 / macs:.2f}×", f"{realised * macs:.2f}" if realised else "-"]
        lines.append("| " + " | ".join(cells) + " |")


def main() -> None:
    args = parse_args()
    began = datetime.now(timezone.utc)
    load = os.getloadavg()[0]
    lines: list[str] = []
    for name in args.models:
        bench_model(name, args, lines)
    header = [
        "# onnxruntime CPU speed-up of pruned models (new defaults: --round-to auto)\n",
        f"- date: {began:%Y-%m-%d %H:%M} UTC; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other sessions; 1-min load average at start / end: "
        f"{load:.2f} / {os.getloadavg()[0]:.2f}",
        f"- onnx {onnx.__version__}, onnxruntime {ort.__version__}, threads {args.threads}",
        f"- command: `python benchmarks/bench_latency.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- batch 1: {args.runs} interleaved rounds, batch 32: {args.runs_b32} (one warm-up "
        "round each); medians; speed-up spread = IQR of per-round seed/model ratios",
    ]
    Path(args.out).write_text("\n".join(header + lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
