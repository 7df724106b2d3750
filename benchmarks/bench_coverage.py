"""Coverage: every model we can get, analysed and L1-pruned at 0.5, checked like a user would.

For each model: analyze (uncounted nodes allowed, and listed), prune with L1 at budget 0.5,
then the post-conditions: onnx.checker (full), onnxruntime loads it, and it computes the seed
with the removed channels zeroed at batch 1 and 3 (the folded seed must also equal the file's).
Models: the test-built graphs, samples/, the onnx wheel's light models, /work/exports (made by
make_exports.py) and the rapidocr PaddleOCR models. Missing folders are skipped.

    python benchmarks/bench_coverage.py [--out benchmarks/RESULTS_coverage.md] [--only WORD]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxmorph.errors import PruningError  # noqa: E402
from onnxmorph.graph import analyze  # noqa: E402
from tests.graph import test_real_exports as real  # noqa: E402
from tests.onnx_builders import LIGHT_MODELS_DIR, conv_chain_model  # noqa: E402

EXPORTS = Path("/work/exports")
RAPIDOCR = Path("/work/pkgmodels/rapidocr/rapidocr_onnxruntime/models")
RAPIDOCR_SHAPES = {"det": (1, 3, 64, 64), "rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}
EXPORT_SHAPES = {"paddle_small_cnn.onnx": {"x": (1, 3, 32, 32)}}  # Paddle leaves H, W open
TIMEOUT_S = 300


def models() -> list[tuple[str, object, dict | None]]:
    found: list[tuple[str, object, dict | None]] = [
        ("built: conv chain", conv_chain_model(), None),
        ("built: paddle-style -1 dims", real.paddle_style_model(), {"x": (1, 3, 8, 8)}),
        ("built: shuffle from Shape ops", real.shuffle_model(), None),
        ("built: cls-token Expand", real.cls_token_model(), None),
    ]
    found += [(f"samples/{p.name}", str(p), None)
              for p in sorted((ROOT / "samples").glob("*.onnx"))]
    found += [(f"tests/data/{p.name}", str(p), None) for p in sorted(real.DATA.glob("*.onnx"))]
    found += [(f"light/{p.name}", str(p), None)
              for p in sorted(Path(LIGHT_MODELS_DIR).glob("light_*.onnx"))]
    found += [(f"exports/{p.name}", str(p), EXPORT_SHAPES.get(p.name))
              for p in sorted(EXPORTS.glob("*.onnx"))]
    for path in sorted(RAPIDOCR.glob("*.onnx")):
        kind = next(k for k in RAPIDOCR_SHAPES if f"_{k}_" in path.name)
        found.append((f"rapidocr/{path.name}", str(path), {"x": RAPIDOCR_SHAPES[kind]}))
    return found


def _timeout(signum, frame):
    raise TimeoutError(f"over {TIMEOUT_S} s")


def run_one(name: str, model, shapes) -> dict:
    row = {"model": name, "status": "FAIL", "reason": "", "macs": "", "ratio": "",
           "uncounted": "", "seconds": 0.0}
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(TIMEOUT_S)
    stage = "analyze"
    try:
        analysis = analyze(model, shapes, allow_uncounted=True)
        row["macs"] = f"{analysis.macs / 1e6:.2f}M"
        row["uncounted"] = ", ".join(f"{u.op_type}:{u.reason}" for u in analysis.uncounted) or "0"
        stage = "prune+post-conditions"
        seed = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
        dynamic = real.load_model(seed, shapes) and _dynamic_batch(seed)
        result = real.assert_prunes_exactly(model, shapes, (1, 3) if dynamic else (1,))
        row["ratio"] = f"{result.costs['ratio']['macs']:.3f}"
        row["status"] = "pass" if dynamic else "pass (batch 1 only: fixed batch)"
    except BaseException as exc:  # noqa: BLE001 - every failure is a row in the table
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        row["reason"] = f"{stage}: {type(exc).__name__}: {text}"
        if isinstance(exc, PruningError) and "no prunable channel group" in text:
            row["status"], row["reason"] = "nothing prunable", text
    finally:
        signal.alarm(0)
    row["seconds"] = time.perf_counter() - start
    return row


def _dynamic_batch(model: onnx.ModelProto) -> bool:
    from onnxmorph.graph.shapes import dynamic_batch_inputs

    return bool(dynamic_batch_inputs(model))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_coverage.md"))
    parser.add_argument("--only", default="", help="comma-separated words; run matching models")
    args = parser.parse_args()
    rows = []
    for name, model, shapes in models():
        if args.only and not any(word in name for word in args.only.split(",")):
            continue
        rows.append(run_one(name, model, shapes))
        r = rows[-1]
        print(f"{r['status']:5s} {r['seconds']:6.1f}s {name} {r['macs']} {r['ratio']} "
              f"{r['reason']}", flush=True)
        write_results(rows, args.out, " ".join(sys.argv[1:]))  # a long run keeps what it has


def write_results(rows: list[dict], path: str, argv: str) -> None:
    passed = sum(r["status"].startswith("pass") for r in rows)
    lines = [
        "# Coverage: analyse and L1-prune at 0.5 every model we can get",
        "",
        f"Command: `python benchmarks/bench_coverage.py {argv}`".replace(" `", "`", 0),
        "",
        "Post-conditions per model: onnx.checker (full), loads in onnxruntime, equals the seed "
        "with removed channels zeroed (atol=rtol=1e-4) at batch 1 and 3 (batch 1 only where the "
        "file fixes the batch), and the folded seed equals the file's seed. MACs: the seed's, "
        "at batch 1; ratio: pruned/seed MACs; uncounted: nodes whose MACs are not known.",
        "",
        f"**{passed} of {len(rows)} pass.**",
        "",
        "| model | result | seed MACs | MAC ratio | uncounted | s | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['status']} | {r['macs']} | {r['ratio']} | "
                     f"{r['uncounted']} | {r['seconds']:.1f} | {r['reason'].replace('|', '/')} |")
    Path(path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
