"""Real PyTorch transformer exports through onnxmorph: groups, exact MACs, L1 at 0.5 verified,
and the onnxruntime speed-up of the pruned model (seed and result timed interleaved).

Make the exports first (torch needed there, not here):
    /work/exporters-venv/bin/python tests/fixtures/transformers/make_transformers.py bench DIR
then:
    python benchmarks/bench_transformers.py DIR --out benchmarks/RESULTS_transformers.md
Sizes: tests/fixtures/transformers/architectures.py (BENCH; SWIN_T for swin_t_*; FIXTURE with
--sizes fixture, to run over the committed fixtures).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import time
import traceback

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import onnxmorph  # noqa: E402
from onnxmorph.graph import analyze  # noqa: E402
from onnxmorph.latency.measure import time_interleaved  # noqa: E402
from onnxmorph.rewrite import zero_removed_channels  # noqa: E402
from tests.fixtures.transformers.architectures import (  # noqa: E402
    BENCH,
    FIXTURE,
    SWIN_T,
    family,
    macs,
)

HF_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def architecture(name: str, sizes: dict) -> tuple[str, dict]:
    if name.startswith("swin_t_"):
        return "swin", SWIN_T
    kind = family(name)
    return ("bert" if kind == "hfbert" else kind), sizes["bert" if kind == "hfbert" else kind]


def input_shapes(name: str, cfg: dict, batch: int, tokens: int | None = None):
    kind = family(name)
    tokens = tokens or cfg.get("tokens")
    if kind == "hfbert":
        return {n: (batch, tokens) for n in HF_INPUTS}
    if kind == "bert":
        return {"input": (batch, tokens)}
    if kind == "sdpa":
        return {"input": (batch, tokens, cfg["features"])}
    return None if batch == 1 else {"input": (batch, 3, cfg["image"], cfg["image"])}


def groups(analysis, kind: str, cfg: dict) -> tuple[list, list]:
    if kind == "swin":
        counts = [h for d, h in zip(cfg["depths"], cfg["heads"]) for _ in range(d)]
    else:
        counts = [cfg["heads"]] * cfg["layers"]
    prunable = analysis.channels.prunable_groups()
    heads = [g for g in prunable if g.channels in counts][:len(counts)]
    return heads, [g for g in prunable if g not in heads]


def feeds_at(name: str, cfg: dict, batch: int, tokens: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    shapes = input_shapes(name, cfg, batch, tokens)
    return {n: (rng.integers(0, 2, s) if n in HF_INPUTS[1:] else rng.integers(0, 30, s))
            if family(name) in ("bert", "hfbert") else rng.standard_normal(s).astype(np.float32)
            for n, s in shapes.items()}


def shorter_sequence_ok(name, cfg, seed, result) -> str:
    """The pruned model against the seed with removed channels zeroed, at a shorter sequence
    (each sample alone through the zeroed seed): 'yes', 'no' or why not checked."""
    import onnxruntime as ort

    if family(name) not in ("bert", "hfbert", "sdpa"):
        return "n/a (fixed size)"
    analysis = result.analysis
    keep = {t: result.alive[lay.ids] for t, lay in analysis.channels.layouts.items()
            if t not in analysis.loaded.initializers}
    zeroed = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                   keep)
    feeds = feeds_at(name, cfg, 2, cfg["tokens"] // 2, seed=5)

    def run(model, f):
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, f)[0]
    try:
        run(seed, feeds)
    except Exception:
        return "n/a (export bakes T)"
    want = np.concatenate([run(zeroed, {k: v[i:i + 1] for k, v in feeds.items()})
                           for i in range(2)])
    got = run(result.model, feeds)
    return "yes" if np.allclose(got, want, rtol=1e-3, atol=1e-4) else "NO"


def bench_one(path: str, sizes: dict, batch: int, runs: int) -> str:
    name = os.path.basename(path)[:-5]
    kind, cfg = architecture(name, sizes)
    shapes = input_shapes(name, cfg, 1)
    started = time.time()
    analysis = analyze(path, shapes)
    heads, mlps = groups(analysis, kind, cfg)
    independent = macs(kind, cfg)
    found = f"{len(heads)}×{{{','.join(str(g.channels) for g in heads)}}} heads, " \
            f"{len(mlps)} MLP"
    macs_cell = f"{analysis.macs / 1e6:.3f} M / {independent / 1e6:.3f} M" + (
        " ✓" if analysis.macs == independent else " ✗")
    try:
        result = onnxmorph.prune(path, method="l1", budget=0.5,
                                 input_shapes=shapes)
    except Exception as exc:  # recorded, not fatal
        return f"| {name} | {found} | {macs_cell} | FAILED: {str(exc)[:120]} | | | | | | |"
    kept = [int(result.alive[g.units].sum()) for g in heads]
    kept_mlp = [int(result.alive[g.units].sum()) for g in mlps]
    pruned_macs = analyze(result.model, shapes).macs
    exact = pruned_macs == macs(kind, cfg, heads=kept, mlp=kept_mlp)
    seed = onnx.load(path)
    lengths = shorter_sequence_ok(name, cfg, seed, result)
    timing_shapes = input_shapes(name, cfg, batch)
    # The folded seed (onnxmorph's loaded model, nothing removed) tells pruning's share of
    # the speed-up from constant folding's.
    seed_t, folded_t, pruned_t = time_interleaved(
        [seed, analysis.loaded.model, result.model], batch=batch, threads=1, runs=runs,
        warmup=3, shapes=timing_shapes)
    load = os.getloadavg()[0]
    print(f"{name}: {time.time() - started:.1f}s", file=sys.stderr, flush=True)
    return (f"| {name} | {found} | {macs_cell} | yes (b1, b3); shorter T: {lengths} | "
            f"heads {kept}, MLP {kept_mlp}; {pruned_macs / analysis.macs:.3f} "
            f"{'exact' if exact else 'NOT exact'} | {seed_t.median_ms:.2f} | "
            f"{folded_t.median_ms:.2f} | {pruned_t.median_ms:.2f} | "
            f"**{seed_t.median_ms / pruned_t.median_ms:.2f}×** "
            f"({folded_t.median_ms / pruned_t.median_ms:.2f}×) | {load:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--sizes", choices=["bench", "fixture"], default="bench")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", default="*")
    parser.add_argument("--out")
    args = parser.parse_args()
    sizes = BENCH if args.sizes == "bench" else FIXTURE
    load_start = os.getloadavg()
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{platform.platform()}, {os.cpu_count()} CPUs shared with other sessions",
        f"- onnx {onnx.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
        f"L1 at 0.5 with the defaults (round-to auto), 1 thread, batch {args.batch}, "
        f"{args.runs} interleaved rounds (3 warm-up), medians",
        f"- command: `python benchmarks/bench_transformers.py {' '.join(sys.argv[1:])}`",
        "", "| export | groups found | MACs analysed / by hand | L1 0.5 verified | kept; "
        "MACs ratio | seed ms | folded seed ms | pruned ms | speed-up (vs folded) | load |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(args.dir, f"{args.only}.onnx"))):
        try:
            lines.append(bench_one(path, sizes, args.batch, args.runs))
        except Exception as exc:
            traceback.print_exc()
            lines.append(f"| {os.path.basename(path)} | ERROR {type(exc).__name__}: "
                         f"{str(exc)[:150]} | | | | | | | | |")
        print(lines[-1], flush=True)
    lines.insert(1, f"- 1-min load average at start / end: {load_start[0]:.2f} / "
                    f"{os.getloadavg()[0]:.2f}")
    if args.out:
        with open(args.out, "a") as out:
            out.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
