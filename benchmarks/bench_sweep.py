"""A real budget sweep of the ResNet sample on local Ray against the same runs one by one.

Both schedules run the same (budget, seed) runs of `onnxmorph prune` with gates on
samples/loader.py:

- ray:        `onnxmorph.sweep(...)` on a local Ray instance, 1 onnxruntime thread per run,
              as many runs at once as the machine has cores;
- sequential: the same runs one after another in this process with onnxruntime's default
              threads (one per core): what a user gets running `onnxmorph prune` by hand.

Writes the markdown (wall time of each schedule, every run's accuracy and MACs under both)
and copies the Ray sweep's pareto.png next to it.

    python benchmarks/bench_sweep.py            # 5 budgets x 2 seeds, 60 + 60 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime

import onnxmorph
from onnxmorph.sweep import plan_runs, run_one, summarize
from onnxmorph.sweep_ray import local_cores

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.2,0.3,0.5,0.75,0.9")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_sweep.md"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "sweep_pareto.png"))
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--from-records", action="store_true",
                        help="write the markdown from the run records in --workdir of an "
                             "earlier, possibly interrupted, invocation")
    args = parser.parse_args()
    if args.from_records:
        return _from_records(args)
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    model, data = str(ROOT / "samples" / "resnet_seed.onnx"), str(ROOT / "samples" / "loader.py")
    training = {"steps": args.steps, "finetune_steps": args.finetune_steps}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep-"))
    loads = {}

    loads["ray"] = [os.getloadavg()[0]]
    start = time.perf_counter()
    parallel = onnxmorph.sweep(model, data=data, budgets=budgets, seeds=seeds,
                               outdir=work / "ray", training=training, threads_per_run=1,
                               on_run_done=lambda r: print(r["name"], r["status"], flush=True))
    ray_seconds = time.perf_counter() - start
    loads["ray"].append(os.getloadavg()[0])

    loads["sequential"] = [os.getloadavg()[0]]
    start = time.perf_counter()
    records = []
    for spec in plan_runs(model, data=data, budgets=budgets, seeds=seeds,
                          outdir=work / "sequential", method="auto", target="flops",
                          training=training, threads_per_run=1):
        spec = dataclasses.replace(spec, training={**spec.training, "threads": None})
        records.append(run_one(spec))
        print(records[-1]["name"], records[-1]["status"], "(sequential)", flush=True)
    (work / "sequential").mkdir(exist_ok=True)
    sequential = summarize(records, work / "sequential", "flops")
    seq_seconds = time.perf_counter() - start
    loads["sequential"].append(os.getloadavg()[0])

    if parallel.plot == parallel.outdir / "pareto.png":
        shutil.copyfile(parallel.plot, args.plot)
    Path(args.out).write_text(_markdown(args, parallel, sequential, ray_seconds, seq_seconds,
                                        loads))
    print(f"ray {ray_seconds:.0f} s, sequential {seq_seconds:.0f} s; wrote {args.out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _from_records(args) -> None:
    """Wall times from the records' clocks: Ray's from the first run's start to the last
    run's end (Ray's own start and stop, a few seconds, excluded); the sequential schedule's
    as the sum of the runs that finished, when it was stopped early."""
    work = Path(args.workdir)
    ray_records = _records(work / "ray")
    seq_records = _records(work / "sequential")
    ray_seconds = (max(r["started"] + r["seconds"] for r in ray_records)
                   - min(r["started"] for r in ray_records))
    seq_seconds = sum(r["seconds"] for r in seq_records)
    parallel = summarize(ray_records, work / "ray", "flops")
    (work / "sequential").mkdir(exist_ok=True)
    sequential = summarize(seq_records, work / "sequential", "flops")
    if parallel.plot == parallel.outdir / "pareto.png":
        shutil.copyfile(parallel.plot, args.plot)
    note = (f"**The sequential schedule was stopped after {len(seq_records)} of "
            f"{len(ray_records)} runs** (the session's deadline); its time below is the sum "
            f"of those runs, and the per-run mean is the comparable figure." if
            len(seq_records) < len(ray_records) else "")
    Path(args.out).write_text(_markdown(args, parallel, sequential, ray_seconds, seq_seconds,
                                        None, note))


def _records(folder: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted(folder.glob("run-*/run.json"))]


def _markdown(args, parallel, sequential, ray_seconds, seq_seconds, loads, note="") -> str:
    n, n_seq = len(parallel.runs), len(sequential.runs)
    by_name = {r["name"]: r for r in sequential.runs}
    missing = {"macs_ratio": None, "accuracy": None, "on_front": False}
    rows = []
    for r in parallel.runs:
        s = by_name.get(r["name"], missing)
        rows.append(f"| {r['name']} | {_pct(r['macs_ratio'])} | {_pct(r['accuracy'])} | "
                    f"{'yes' if r['on_front'] else ''} | {_pct(s['macs_ratio'])} | "
                    f"{_pct(s['accuracy'])} | {'yes' if s['on_front'] else ''} |")
    front = ", ".join(r["name"] for r in parallel.front)
    failed = [f"{r['name']}: {r['reason']}" for r in [*parallel.runs, *sequential.runs]
              if r["status"] == "failed"]
    return "\n".join([
        "# Budget sweep on local Ray vs the same runs one by one",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.platform()}, {local_cores()} cores usable, Python "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"ray {_ray_version()}",
        f"- command: `python benchmarks/bench_sweep.py --budgets {args.budgets} --seeds "
        f"{args.seeds} --steps {args.steps} --finetune-steps {args.finetune_steps}`",
        f"- {n} runs of `prune --method gates` on samples/resnet_seed.onnx with "
        f"samples/loader.py (batch 64), {args.steps} structure-learning + "
        f"{args.finetune_steps} fine-tune steps each, 4 test-set evaluations per run",
        "- ray: local instance, 1 onnxruntime training thread per run, "
        f"{local_cores()} runs at once; sequential: one process, onnxruntime's default "
        "threads. Evaluation sessions use onnxruntime's default threads in both.",
        "- the CPU was shared with other work (the two schedules ran one after the other, "
        "not interleaved)" + (
            f": 1-min load average at start / end: ray {loads['ray'][0]:.1f} / "
            f"{loads['ray'][1]:.1f}, sequential {loads['sequential'][0]:.1f} / "
            f"{loads['sequential'][1]:.1f}" if loads else ""),
        *(["", note] if note else []),
        "",
        "| schedule | runs | wall time | per run |",
        "|---|---|---|---|",
        f"| ray (parallel) | {n} | {ray_seconds:.0f} s | {ray_seconds / n:.1f} s |",
        f"| sequential | {n_seq} | {seq_seconds:.0f} s | {seq_seconds / max(n_seq, 1):.1f} s |",
        "",
        f"**Per-run time, sequential over Ray: "
        f"{(seq_seconds / max(n_seq, 1)) / (ray_seconds / n):.2f}×.**",
        "",
        "| run | MACs (ray) | accuracy (ray) | front (ray) | MACs (seq.) | accuracy (seq.) "
        "| front (seq.) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Pareto front of the Ray sweep (accuracy up, MACs down): {front}. Picture: "
        f"`{Path(args.plot).name}`.",
        *(["", "Failed runs:", *[f"- {f}" for f in failed]] if failed else []),
        "",
        "## Not measured",
        "",
        "- `--device cuda`: no GPU was available in this session, so structure-learning step "
        "time of the ResNet sample and of ResNet-50 at 224x224 (batch 64) on CUDA against CPU "
        "is unmeasured; the CUDA path is covered by tests that run only where onnxruntime has "
        "the CUDAExecutionProvider (tests/training/test_device.py).",
        "- a multi-node Ray cluster (`--address`).",
        "",
    ])


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    sys.exit(main())
