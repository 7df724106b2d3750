"""gates vs l1 vs uniform on the ViT sample (samples/vit_seed.onnx) at several MACs budgets.

For every seed, budget and method: `onnxmorph.prune(vit_seed.onnx, method, data=
samples/loader.py, budget)` with the CLI's defaults (--round-to auto; gates: S structure
steps, then F fine-tune steps; l1 and uniform: the same F fine-tune steps after slicing).
Reported: test accuracy right after slicing and after fine-tuning (whole 2000-image test
subset), the MACs ratio, heads kept per block and MLP widths, the onnxruntime latency of seed
and pruned model (1 thread, timed interleaved A B A B, median) at batch 1 and 64, and wall
time. Each run is appended to a JSON-lines file, so seeds can be run in separate processes;
the markdown is rendered from every line in it.

    python benchmarks/bench_vit.py --seeds 0          # then --seeds 1; writes RESULTS_vit.md
Quick check: python benchmarks/bench_vit.py --seeds 0 --budgets 0.5 --steps 2 \
    --finetune-steps 2 --runs /tmp/v.jsonl --out /tmp/v.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import onnx
import onnxruntime

import onnxmorph
from onnxmorph.latency.measure import time_interleaved

ROOT = Path(__file__).resolve().parent.parent
VIT = ROOT / "samples" / "vit_seed.onnx"
LOADER = ROOT / "samples" / "loader.py"
METHODS = ("gates", "l1", "uniform")
HEADS, MLP = 4, 192


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=250, help="structure steps S (gates)")
    parser.add_argument("--finetune-steps", type=int, default=250, help="F, every method")
    parser.add_argument("--timing-runs", type=int, default=30)
    parser.add_argument("--runs", default=str(ROOT / "benchmarks/RESULTS_vit.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_vit.md"))
    return parser.parse_args()


def widths(result) -> tuple[list[int], list[int]]:
    """Heads and MLP units alive per block, in graph order."""
    groups = result.analysis.channels.prunable_groups()
    heads = [int(result.alive[g.units].sum()) for g in groups if g.channels == HEADS]
    mlp = [int(result.alive[g.units].sum()) for g in groups if g.channels == MLP]
    return heads, mlp


def run_one(args, method: str, budget: float, seed: int) -> dict:
    row: dict = {"method": method, "budget": budget, "seed": seed, "steps": args.steps,
                 "finetune_steps": args.finetune_steps}
    try:
        start = time.perf_counter()
        result = onnxmorph.prune(str(VIT), method=method, data=str(LOADER), budget=budget,
                                 training={"steps": args.steps,
                                           "finetune_steps": args.finetune_steps,
                                           "seed": seed})
        row["wall_s"] = time.perf_counter() - start
        extra = result.extra
        row.update(before=extra.get("accuracy_before"),
                   after_slice=extra.get("accuracy_after_slice"),
                   after=extra.get("accuracy_after"),
                   macs_ratio=result.costs["ratio"]["macs"])
        row["heads"], row["mlp"] = widths(result)
        seed_model = onnx.load(str(VIT))
        for batch in (1, 64):
            seed_t, pruned_t = time_interleaved([seed_model, result.model], batch=batch,
                                                threads=1, runs=args.timing_runs, warmup=3)
            row[f"seed_ms_b{batch}"], row[f"pruned_ms_b{batch}"] = (seed_t.median_ms,
                                                                    pruned_t.median_ms)
    except Exception as exc:  # one failed run must not lose the others
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    row["load"] = os.getloadavg()[0]
    return row


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def speedup(row: dict, batch: int) -> str:
    return f"{row[f'seed_ms_b{batch}'] / row[f'pruned_ms_b{batch}']:.2f}×"


def table(rows: list[dict], budget: float) -> list[str]:
    lines = [f"## Budget {budget:g} × seed MACs", "",
             "| method | seed | acc. after slice | acc. after fine-tune | Δ vs seed (points) | "
             "MACs ratio | heads kept per block | MLP width per block | speed-up b1 | "
             "speed-up b64 | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        if "error" in row:
            lines.append(f"| {row['method']} | {row['seed']} | failed: {row['error']} |"
                         + " |" * 8)
            continue
        delta = 100 * (row["after"] - row["before"])
        lines.append(
            f"| {row['method']} | {row['seed']} | {pct(row['after_slice'])} | "
            f"{pct(row['after'])} | {delta:+.2f} | {row['macs_ratio']:.3f} | "
            f"{'/'.join(map(str, row['heads']))} | {'/'.join(map(str, row['mlp']))} | "
            f"{speedup(row, 1)} | {speedup(row, 64)} | {row['wall_s']:.0f} |")
    for method in METHODS:
        done = [r for r in rows if r["method"] == method and "error" not in r]
        if len(done) > 1:
            mean = statistics.fmean(r["after"] - r["before"] for r in done)
            lines.append(f"| {method} mean | | | {pct(statistics.fmean(r['after'] for r in done))}"
                         f" | {100 * mean:+.2f} | "
                         f"{statistics.fmean(r['macs_ratio'] for r in done):.3f} | | | | | |")
    return lines + [""]


def write_markdown(args, rows: list[dict], started: datetime) -> None:
    seeds = sorted({r["seed"] for r in rows})
    before = next((r["before"] for r in rows if r.get("before") is not None), None)
    loads = [r["load"] for r in rows]
    lines = [
        "# ViT sample: gates vs l1 vs uniform", "",
        f"- date: {started:%Y-%m-%d %H:%M}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs shared with other engineers' jobs: load average (1 min) "
        f"{min(loads):.1f}–{max(loads):.1f} over the runs, so wall times and latencies are "
        "indicative (seed and pruned model are timed interleaved, which spreads the load "
        "over both)",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `python {' '.join(sys.argv)}` (rows from every run in the JSON-lines "
        f"file, seeds {', '.join(map(str, seeds))})",
        f"- model: `samples/vit_seed.onnx` (4 blocks x 4 heads, MLP 192, 2.98M MACs), seed "
        f"accuracy {pct(before)} %; data `samples/loader.py` (8000 train / 2000 test)",
        f"- gates: S = {rows[0]['steps']} structure steps, then F = "
        f"{rows[0]['finetune_steps']} fine-tune steps; l1 and uniform: the same F fine-tune "
        "steps after slicing (equal fine-tuning; gates also trains during its S steps); "
        "CLI defaults otherwise (AdamW 2e-3, --round-to auto, seed = --seed)",
        "- accuracy on the whole test subset, in %; speed-up = seed / pruned median latency, "
        "onnxruntime CPU, 1 thread",
        "",
    ]
    for budget in sorted({r["budget"] for r in rows}, reverse=True):
        lines += table([r for r in rows if r["budget"] == budget], budget)
    Path(args.out).write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    started = datetime.now()
    for seed in args.seeds:
        for budget in args.budgets:
            for method in args.methods:
                row = run_one(args, method, budget, seed)
                print(json.dumps(row), flush=True)
                with open(args.runs, "a") as runs:
                    runs.write(json.dumps(row) + "\n")
                rows = [json.loads(line) for line in Path(args.runs).read_text().splitlines()]
                write_markdown(args, rows, started)


if __name__ == "__main__":
    main()
