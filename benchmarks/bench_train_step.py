"""Time of a structure-learning step with gates against the same training step without gates.

Both sessions train the ResNet sample with cross-entropy and AdamW on the same real batches of
samples/loader.py (batch 64, fetched before timing, so the loader is not timed):

- plain: the seed, built as fine-tuning builds it (build_training_artifacts with
  cost_output=None, every weight trainable); one step = TrainingSession.train_step.
- gated: the seed with gates and the cost output (insert_gates + build_training_artifacts +
  TrainingSession + GateOptimizer, as onnxmorph/methods/gated.py `_train_gates` builds it);
  one step = what `_train_gates` does per step: draw the gate noise, snapshot the gate logits,
  train_step with λ, GateOptimizer.apply, and every 5th step read the gate probabilities back,
  evaluate the thresholded cost and update the budget controller (only the JSON log and the
  progress line are left out).

The two sessions alternate step by step (plain, gated, plain, ...), so that both see the same
machine load. Reported: median ms per step, and the gated step split into its ORT train_step
and the Python-side gate work. Overhead = gated median / plain median - 1; target ≤ 10 %.
onnxmorph's TrainingSession does not take session options, so ORT's default intra-op thread
count (all cores) is used for both.

Full configuration (run on an otherwise idle machine):

    python benchmarks/bench_train_step.py

which is --steps 30 --warmup 5 --batch 64 --budget 0.5. Expected run time on 2 CPU cores: about
15-40 s (two artifact builds well under a second each, then 2 × 35 steps at 0.15-0.4 s each;
0.35 s per step was measured on a busy 2-core machine).

Quick check:

    python benchmarks/bench_train_step.py --steps 5 --warmup 1 --out /tmp/RESULTS_train_step.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import onnxmorph
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.controller import BudgetController
from onnxmorph.training.data import Batch, DataSource, model_input_specs
from onnxmorph.training.gate_optimizer import GateOptimizer
from onnxmorph.training.gates import COST_OUTPUT, NOISE_INPUT, PREFIX, insert_gates
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.trainer import TrainOptions, endless, output_name

ROOT = Path(__file__).resolve().parent.parent
CONTROL_EVERY = 5  # as onnxmorph.methods.gated._CONTROL_EVERY
TARGET_OVERHEAD = 0.10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "samples/resnet_seed.onnx"))
    parser.add_argument("--data", default=str(ROOT / "samples/loader.py"))
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each session")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--batch", type=int, default=64,
                        help="batch size (the sample loader yields 64; other sizes are cut "
                             "from or concatenated across its batches)")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="MACs budget of the gated session's λ controller")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_train_step.md"))
    return parser.parse_args()


def real_batches(source: DataSource, count: int, size: int) -> list[Batch]:
    """`count` training batches of `size` samples, taken in the loader's order."""
    batches, pending = [], []
    for batch in endless(source):
        pending.append(batch)
        have = sum(b.size for b in pending)
        if have < size:
            continue
        inputs = {k: np.concatenate([b.inputs[k] for b in pending])[:size]
                  for k in pending[0].inputs}
        labels = np.concatenate([b.labels for b in pending])[:size]
        batches.append(Batch(inputs, labels))
        pending = []
        if len(batches) == count:
            return batches
    raise AssertionError("unreachable: endless() never stops")


class PlainStep:
    def __init__(self, model: onnx.ModelProto, folder: str, options: TrainOptions) -> None:
        out = output_name(model)
        paths = build_training_artifacts(
            model, folder, trainable=default_trainable(model, [out]), frozen=None,
            loss="cross-entropy", output_name=out, cost_output=None, optimizer=options.optimizer,
        )
        self.session = TrainingSession(paths, learning_rate=options.learning_rate)

    def __call__(self, batch: Batch, step: int) -> tuple[float, float]:
        start = time.perf_counter()
        self.session.train_step(batch.inputs, batch.labels)
        elapsed = time.perf_counter() - start
        return elapsed, elapsed


class GatedStep:
    """One `_train_gates` iteration, minus the JSON log and the progress line."""

    def __init__(self, analysis, folder: str, options: TrainOptions, budget: float) -> None:
        groups = prunable_groups(analysis, SelectionRules())
        self.expr = analysis.cost.expr("flops")
        self.seed_cost = self.expr()
        self.gated = insert_gates(analysis, groups, self.expr, options.gates)
        model = self.gated.model
        out = output_name(model)
        trainable = [n for n in default_trainable(model, [out])
                     if not n.startswith(PREFIX)] + self.gated.logit_names
        paths = build_training_artifacts(
            model, folder, trainable=trainable, frozen=None, loss="cross-entropy",
            output_name=out, cost_output=COST_OUTPUT, optimizer=options.optimizer,
        )
        self.session = TrainingSession(paths, learning_rate=options.learning_rate)
        self.gate_optimizer = GateOptimizer(self.gated.logit_names, options.gates.logit_scale)
        self.rng = np.random.default_rng(options.seed)
        self.threshold = options.alive_threshold
        self.controller = BudgetController(budget, options.strength)

    def __call__(self, batch: Batch, step: int) -> tuple[float, float]:
        start = time.perf_counter()
        feeds = {**batch.inputs, NOISE_INPUT: self.gated.noise(self.rng)}
        before = self.gate_optimizer.snapshot(self.session)
        ort_start = time.perf_counter()
        self.session.train_step(feeds, batch.labels, self.controller.lam)
        ort_elapsed = time.perf_counter() - ort_start
        self.gate_optimizer.apply(self.session, before)
        if step % CONTROL_EVERY == 0:
            probs = self.gated.probabilities(self.session.parameters())
            self.controller.update(self.expr(probs > self.threshold) / self.seed_cost)
        return time.perf_counter() - start, ort_elapsed


def main() -> None:
    args = parse_args()
    started = datetime.now()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    options = TrainOptions(seed=0)
    analysis = onnxmorph.analyze(args.model)
    seed_model = analysis.loaded.model
    source = DataSource(args.data, model_input_specs(seed_model))
    batches = real_batches(source, args.warmup + args.steps, args.batch)
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as tmp:
        build = time.perf_counter()
        plain = PlainStep(seed_model, f"{tmp}/plain", options)
        plain_build = time.perf_counter() - build
        build = time.perf_counter()
        gated = GatedStep(analysis, f"{tmp}/gated", options, args.budget)
        gated_build = time.perf_counter() - build
        times: dict[str, list[float]] = {"plain": [], "gated": [], "gated_ort": []}
        for step, batch in enumerate(batches):
            plain_s, _ = plain(batch, step)
            gated_s, gated_ort_s = gated(batch, step)
            if step >= args.warmup:
                times["plain"].append(plain_s)
                times["gated"].append(gated_s)
                times["gated_ort"].append(gated_ort_s)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    q = {k: [1000 * x for x in statistics.quantiles(v, n=4)] if len(v) > 1 else [0.0, 0.0, 0.0]
         for k, v in times.items()}
    python_side = [1000 * (g - o) for g, o in zip(times["gated"], times["gated_ort"])]
    overhead = med["gated"] / med["plain"] - 1
    ort_overhead = med["gated_ort"] / med["plain"] - 1
    verdict = "meets" if overhead <= TARGET_OVERHEAD else "misses"
    command = " ".join(["python", *sys.argv])
    lines = [
        "# Structure-learning step time: gated vs plain training step", "",
        f"- date: {started:%Y-%m-%d %H:%M}",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (os.cpu_count()), Python {platform.python_version()}; "
        f"1-min load average at start / end: {load_start:.2f} / {load_end:.2f}",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `{command}`",
        f"- model: `{os.path.relpath(args.model, ROOT)}`, batch {args.batch} of real "
        f"`{os.path.relpath(args.data, ROOT)}` batches, cross-entropy, AdamW; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, sessions alternating "
        "step by step; ORT default intra-op threads",
        f"- artifact build: plain {plain_build:.2f} s, gated {gated_build:.2f} s "
        f"({len(gated.gated.logit_names)} gate vectors, {gated.gated.gated_units.size} gates)",
        "",
        "| step | median ms/step | p25 ms | p75 ms | vs plain |",
        "|---|---|---|---|---|",
        f"| plain train_step | {med['plain']:.2f} | {q['plain'][0]:.2f} | {q['plain'][2]:.2f} "
        "| – |",
        f"| gated: ORT train_step only | {med['gated_ort']:.2f} | {q['gated_ort'][0]:.2f} | "
        f"{q['gated_ort'][2]:.2f} | {100 * ort_overhead:+.1f} % |",
        f"| gated: full step (noise, snapshot, train_step, GateOptimizer, every "
        f"{CONTROL_EVERY}th step gate read-back + λ controller) | {med['gated']:.2f} | "
        f"{q['gated'][0]:.2f} | {q['gated'][2]:.2f} | {100 * overhead:+.1f} % |",
        "",
        f"Python-side gate work per step (full − ORT): median {statistics.median(python_side):.2f}"
        " ms.",
        "",
        f"**Overhead of the gated step: {100 * overhead:+.1f} % (target ≤ "
        f"{100 * TARGET_OVERHEAD:.0f} %: {verdict} it).**", "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
