"""Training step time at onnxruntime's default intra-op threads vs `--threads N`.

Sessions train the ResNet sample (cross-entropy, AdamW, batch 64 of samples/loader.py, fetched
before timing), one TrainingSession per thread setting, stepping in turn (default, 1, 2, …)
so all see the same machine load. Reported: median and IQR ms per step.

    python benchmarks/bench_train_threads.py            # --steps 20 --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_train_step import real_batches  # noqa: E402

from onnxmorph.training.artifacts import build_training_artifacts  # noqa: E402
from onnxmorph.training.data import DataSource, model_input_specs  # noqa: E402
from onnxmorph.training.parameters import default_trainable  # noqa: E402
from onnxmorph.training.session import TrainingSession  # noqa: E402
from onnxmorph.training.trainer import output_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "samples/resnet_seed.onnx"))
    parser.add_argument("--data", default=str(ROOT / "samples/loader.py"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_latency_train_threads.md"))
    args = parser.parse_args()
    began, load = datetime.now(timezone.utc), os.getloadavg()[0]
    model = onnx.load(args.model)
    source = DataSource(args.data, model_input_specs(model))
    batches = real_batches(source, args.steps + args.warmup, 64)
    settings = [None, *args.threads]
    out = output_name(model)
    sessions = []
    with tempfile.TemporaryDirectory() as folder:
        for threads in settings:
            paths = build_training_artifacts(
                model, f"{folder}/{threads}", trainable=default_trainable(model, [out]),
                frozen=None, loss="cross-entropy", output_name=out, cost_output=None,
                optimizer="adamw")
            sessions.append(TrainingSession(paths, learning_rate=1e-3, threads=threads))
        times = np.zeros((args.steps, len(settings)))
        for step, batch in enumerate(batches):
            for i, session in enumerate(sessions):
                start = time.perf_counter()
                session.train_step(batch.inputs, batch.labels)
                if step >= args.warmup:
                    times[step - args.warmup, i] = (time.perf_counter() - start) * 1e3
    lines = ["# Training step time vs intra-op threads (TrainingSession `threads`)\n",
             f"- date: {began:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs shared with other "
             f"sessions; 1-min load average at start / end: {load:.2f} / "
             f"{os.getloadavg()[0]:.2f}",
             f"- command: `python benchmarks/bench_train_threads.py {' '.join(sys.argv[1:])}`",
             f"- {args.model}, batch 64, AdamW, {args.steps} timed steps after {args.warmup}, "
             "sessions stepping in turn\n",
             "| intra-op threads | median ms/step | IQR ms | vs default |", "|---|---|---|---|"]
    base = np.median(times[:, 0])
    for i, threads in enumerate(settings):
        q1, med, q3 = np.percentile(times[:, i], [25, 50, 75])
        label = "onnxruntime default" if threads is None else str(threads)
        lines.append(f"| {label} | {med:.1f} | {q1:.1f}–{q3:.1f} | {med / base - 1:+.1%} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
