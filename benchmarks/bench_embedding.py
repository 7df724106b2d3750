"""--prune-embedding on the ViT sample: L1 and uniform at a MACs budget, with and without the
embedding as a group, equal fine-tuning on samples/loader.py. Prints one JSON line per run:
accuracy of the seed and the result, MACs/params ratios, heads kept per attention layer, MLP
units per block, the embedding width, and onnxruntime's measured speed-up.

    python benchmarks/bench_embedding.py --budgets 0.5 0.3 --finetune-steps 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnxmorph

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "samples" / "vit_seed.onnx"))
    parser.add_argument("--data", default=str(ROOT / "samples" / "loader.py"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5])
    parser.add_argument("--methods", nargs="+", default=["l1", "uniform"])
    parser.add_argument("--finetune-steps", type=int, default=300)
    args = parser.parse_args()
    for budget in args.budgets:
        for method in args.methods:
            for embedding in (False, True):
                start = time.perf_counter()
                result = onnxmorph.prune(args.model, method=method, budget=budget,
                                         data=args.data, prune_embedding=embedding,
                                         measure_latency=True,
                                         training={"finetune_steps": args.finetune_steps})
                report, section = result.report(), result.structure["transformer"]
                print(json.dumps({
                    "method": method, "budget": budget, "prune_embedding": embedding,
                    "ratio": report["ratio"],
                    "accuracy_seed": report.get("accuracy_before"),
                    "accuracy": report.get("accuracy_after"),
                    "measured": (report.get("latency") or {}).get("measured"),
                    "heads": [a["heads_after"] for a in section["attention"]],
                    "mlp": [m["units_after"] for m in section["mlp"]],
                    "embedding": (section["embedding"] or {}).get("channels_after"),
                    "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
