"""Time `analyze` (load + channel groups + cost) and L1 slicing on ResNet-50.

Usage: python benchmarks/bench_analyze.py [--repeat 5] [--out benchmarks/RESULTS_analyze.md]
The model is the onnx wheel's light ResNet-50 (constant weights, randomised here for slicing).
Target from the analysis issue: analyze well under 3 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date

import numpy as np
import onnx
import onnxruntime

import onnxmorph
from onnxmorph.methods.l1 import l1_unit_scores, normalized_within_groups
from onnxmorph.methods.select import select_to_budget
from onnxmorph.rewrite import slice_channels

MODEL = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/RESULTS_analyze.md")
    args = parser.parse_args()
    t_analyze, analysis = timed(lambda: onnxmorph.analyze(MODEL), args.repeat)
    rng = np.random.default_rng(0)
    for name, value in analysis.loaded.initializers.items():
        if value.dtype == np.float32:
            analysis.loaded.initializers[name] = rng.standard_normal(value.shape).astype(
                np.float32)
    scores = normalized_within_groups(analysis, l1_unit_scores(analysis))
    t_select, alive = timed(lambda: select_to_budget(analysis, scores, "flops", 0.5), args.repeat)
    t_slice, _ = timed(lambda: slice_channels(analysis, alive), args.repeat)
    rows = [("analyze (load + groups + cost)", t_analyze), ("L1 select to 50 % MACs", t_select),
            ("slice", t_slice)]
    command = "python benchmarks/bench_analyze.py " + " ".join(sys.argv[1:])
    lines = [
        "# Analysis and slicing time on ResNet-50 (onnx light model)", "",
        f"- date: {date.today()}", f"- machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}", f"- command: `{command.strip()}`",
        f"- median of {args.repeat} runs; target: analyze well under 3 s", "",
        "| step | seconds |", "|---|---|",
        *[f"| {name} | {seconds:.3f} |" for name, seconds in rows], "",
    ]
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
