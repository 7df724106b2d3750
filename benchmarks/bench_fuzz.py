"""Fuzz `onnxmorph analyze` and `onnxmorph prune --method l1` with mutated sample models.

Usage: python benchmarks/bench_fuzz.py [--cases 1000] [--transformer-cases 0] [--seed 0]
                                      [--out benchmarks/RESULTS_fuzz.md]
The cases are those of tests/test_fuzz.py (tests/fuzz_cases.py), many more of them: --cases
of the CNN samples, --transformer-cases of the transformer ones (a table each). Goal
from issue 11: 0 tracebacks, 0 hangs, 0 crashes, and every exit-0 output passes its
post-conditions when checked again from the file.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

import onnxmorph  # noqa: E402
from tests.fuzz_cases import KINDS, TRANSFORMERS, outcome_of, run_cases  # noqa: E402

OUTCOMES = ("ok", "refused", "caught by post-conditions", "traceback", "internal error",
            "not one line", "bad output", "hang", "crash")


def _outcome(result: dict) -> str:
    word = outcome_of(result)
    return "crash" if word.startswith("crash") else word


def _exits(results: list[dict], command: str) -> collections.Counter:
    return collections.Counter(str(r[command]["exit"]) for r in results if command in r)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--transformer-cases", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_fuzz.md"))
    args = parser.parse_args()

    command = f"python benchmarks/bench_fuzz.py --cases {args.cases} --seed {args.seed}"
    if args.transformer_cases:
        command += f" --transformer-cases {args.transformer_cases}"
    lines = [
        "# Fuzzing analyze and prune --method l1 with mutated sample models",
        "",
        f"- date: {date.today()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
        f"{onnxmorph.__version__}",
        f"- command: `{command}`",
        "- ok: prune exit 0 and the written model passes checker, onnxruntime load and verify "
        "against the mutated seed, re-checked from the file; refused: exit 2 with one line "
        "on stderr; caught by post-conditions: exit 1, one line, nothing written (a model "
        "onnxmorph got wrong); internal error: an unexpected exception the CLI turned into "
        "one line and exit 1 (a bug, listed below); crash: the process died by a signal",
    ]
    families = [("cnn", args.cases, "samples/mobilenet_seed.onnx and samples/resnet_seed.onnx "
                 "alternately"),
                ("transformer", args.transformer_cases, f"{len(TRANSFORMERS)} transformers in "
                 f"turn ({', '.join(TRANSFORMERS)}; real exports with the --input-shape "
                 "their sequence needs)")]
    for family, cases, samples in families:
        if cases:
            start = time.perf_counter()
            results = run_cases(list(range(cases)), args.seed, args.timeout, family)
            lines += _section(family, results, time.perf_counter() - start, samples)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _section(family: str, results: list[dict], seconds: float, samples: str) -> list[str]:
    table = collections.Counter((r["mutation"], _outcome(r)) for r in results)
    totals = collections.Counter(_outcome(r) for r in results)
    lines = [
        "",
        f"## {family.upper() if family == 'cnn' else family.capitalize()} samples",
        "",
        f"{len(results)} cases in {seconds:.0f} s; {samples}, one mutation each "
        "(tests/fuzz_cases.py)",
        "",
        "| mutation | " + " | ".join(OUTCOMES) + " |",
        "|---|" + "---|" * len(OUTCOMES),
    ]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(str(table[(kind, o)]) for o in OUTCOMES)
                     + " |")
    lines.append("| **total** | " + " | ".join(f"**{totals[o]}**" for o in OUTCOMES) + " |")
    lines += ["", "Exit codes: analyze " + _format(_exits(results, "analyze"))
              + "; prune " + _format(_exits(results, "prune")) + "."]
    problems = [r for r in results if _outcome(r) not in ("ok", "refused")]
    if problems:
        lines += ["", "Cases that went wrong:", ""]
        for r in problems[:30]:
            detail = r.get("outcome") or next(
                (f"{c}: {r[c]['message']}" for c in ("analyze", "prune")
                 if r[c]["exit"] not in (0, 2)), r.get("recheck", ""))
            lines.append(f"- case {r['case']} ({r['sample']}, {r['mutation']}): {detail}")
    messages = collections.Counter(_kind_of(r["prune"]["message"]) for r in results
                                   if "prune" in r and r["prune"]["exit"] in (1, 2))
    lines += ["", "Most frequent refusals (prune):", "", "| count | message starts |",
              "|---|---|"]
    lines += [f"| {n} | {m} |" for m, n in messages.most_common(12)]
    return lines


def _kind_of(message: str) -> str:
    text = re.sub(r"'[^']*'", "'…'", message.removeprefix("onnxmorph: error: "))
    for cut in ("(", ":"):
        if cut in text[8:]:
            text = text[: 8 + text[8:].index(cut)]
    return text.strip().replace("|", "/")[:70]


def _format(counter: collections.Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))


if __name__ == "__main__":
    main()
