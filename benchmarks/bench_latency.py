"""onnxruntime CPU latency of the seed and of pruned models, against their MACs.

Every model is run with the CPU execution provider, sequential execution, a fixed number of
intra-op threads (--threads) and one inter-op thread, on random float32 inputs at batch 1 and
batch 32. A model's latency is the median of --repeats timed runs after --warmup untimed ones.
Speed-up is the seed's median latency over the model's; the ideal speed-up is 1 / MACs ratio
(MACs from onnxmorph.analyze, pruned over seed).

Models: the .onnx files given on the command line, or else every .onnx file in --models-dir
(where benchmarks/bench_accuracy.py saves its pruned models).

Full configuration (run on an otherwise idle machine, after bench_accuracy.py):

    python benchmarks/bench_latency.py

which is --models-dir benchmarks/out --repeats 50 --warmup 5 --threads 2 --batch-sizes 1 32:
the seed plus 18 pruned ResNet samples. Expected run time on 2 CPU cores: about 1-2 minutes
(about 2-3 s per model, most of it the 55 runs at batch 32, plus ~1 s of analysis).

Quick check:

    python benchmarks/bench_latency.py --models-dir /tmp/bench_out --repeats 5 --warmup 1 \
        --out /tmp/RESULTS_latency.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxmorph

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="pruned .onnx files (default: --models-dir)")
    parser.add_argument("--seed-model", default=str(ROOT / "samples/resnet_seed.onnx"))
    parser.add_argument("--models-dir", default=str(ROOT / "benchmarks/out"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="intra_op_num_threads")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_latency.md"))
    return parser.parse_args()


def make_session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def random_feeds(session: ort.InferenceSession, batch: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in session.get_inputs():
        if inp.type != "tensor(float)":
            raise SystemExit(f"input '{inp.name}' is {inp.type}; this benchmark feeds float32")
        # The first axis is the batch; any other symbolic axis would need a value we don't know.
        dims = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def median_ms(session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int,
              warmup: int) -> float:
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)  # one model at a time: warm caches, steady state


def find_models(args: argparse.Namespace) -> list[str]:
    if args.models:
        return args.models
    folder = Path(args.models_dir)
    if not folder.is_dir():
        raise SystemExit(f"no models given and '{folder}' does not exist; run "
                         "benchmarks/bench_accuracy.py first or pass .onnx paths")
    return [str(p) for p in sorted(folder.glob("*.onnx"))]


def display(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else resolved.name


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    args = parse_args()
    started = datetime.now()
    load = load_average()
    paths = [args.seed_model, *[p for p in find_models(args)
                                if Path(p).resolve() != Path(args.seed_model).resolve()]]
    seed_macs = onnxmorph.analyze(args.seed_model).macs
    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, list[float]]] = []
    for path in paths:
        macs_ratio = onnxmorph.analyze(path).macs / seed_macs
        session = make_session(path, args.threads)
        latencies = [median_ms(session, random_feeds(session, batch, rng), args.repeats,
                               args.warmup) for batch in args.batch_sizes]
        rows.append((display(path), macs_ratio, latencies))
        print(f"{display(path)}: MACs {macs_ratio:.3f}, "
              + ", ".join(f"b{b} {ms:.3f} ms" for b, ms in zip(args.batch_sizes, latencies)),
              flush=True)
    seed_latencies = rows[0][2]
    batch_cols = " | ".join(f"b{b} ms" for b in args.batch_sizes)
    speed_cols = " | ".join(f"speed-up b{b}" for b in args.batch_sizes)
    header = f"| model | MACs ratio | {batch_cols} | {speed_cols} | ideal speed-up |"
    table = [header, "|" + "---|" * (3 + 2 * len(args.batch_sizes))]
    for name, ratio, latencies in rows:
        speed = [s / ms for s, ms in zip(seed_latencies, latencies)]
        table.append(f"| {name} | {ratio:.3f} | "
                     + " | ".join(f"{ms:.3f}" for ms in latencies) + " | "
                     + " | ".join(f"{x:.2f}×" for x in speed) + f" | {1 / ratio:.2f}× |")
    command = " ".join(["python", *sys.argv])
    lines = [
        "# onnxruntime CPU latency of pruned models", "",
        f"- date: {started:%Y-%m-%d %H:%M}",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (os.cpu_count()), Python {platform.python_version()}; "
        f"1-min load average at start / end: {load:.2f} / {load_average():.2f}",
        f"- onnx {onnx.__version__}, onnxruntime {ort.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `{command}`",
        f"- CPUExecutionProvider, ORT_SEQUENTIAL, intra_op_num_threads={args.threads}, "
        "inter_op_num_threads=1, ORT_ENABLE_ALL graph optimisations; random float32 inputs",
        f"- median of {args.repeats} runs after {args.warmup} warm-up runs, per model and batch "
        "size; speed-up = seed latency / model latency; ideal speed-up = 1 / MACs ratio", "",
        *table, "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
