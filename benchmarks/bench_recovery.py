"""Accuracy recovered after pruning at an equal training budget (issue 16).

On the ResNet sample, per budget and seed, every row gets the same total of T = S + F
training steps (batches of 64):

- gates + fine-tune: S structure-learning steps, then F fine-tuning steps; the structure
  learnt with cross-entropy (CE) or CE + distillation from the seed (KD, T=4, a=0.5), then
  fine-tuned with the same loss at a constant or cosine learning rate (4 rows);
- l1 + fine-tune, uniform + fine-tune: the one-shot structure, then T fine-tuning steps
  (KD, cosine: the default pipeline's fine-tuning);
- gates structure from scratch, uniform structure from scratch: the structure re-initialised
  as PyTorch does (--reinit) and trained T steps with CE, cosine (Liu et al.'s control);
  `--scratch-kd` adds the same with KD (from scratch, but taught by the seed).

Accuracy on all 2000 test images of the bundled subset. Every finished run is appended to a
JSON file (`--raw`), and the markdown is rewritten from it after each run, so an interrupted
benchmark keeps what it did; rerunning skips the runs already in the file.

    python benchmarks/bench_recovery.py --budgets 0.5 --seeds 0 1 --steps 60 --finetune-steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

import onnxmorph  # noqa: E402
from onnxmorph.graph import analyze  # noqa: E402
from onnxmorph.methods.select import SelectionRules  # noqa: E402
from onnxmorph.training.data import DataSource, model_input_specs  # noqa: E402
from onnxmorph.training.evaluate import evaluate  # noqa: E402

CE, KD = "cross-entropy", "ce+distill"
# row name → (structure, loss, schedule, reinit); structure "gates-ce"/"gates-kd": learnt
# with that loss; the order is the table's.
ROWS = {
    "gates (CE) + FT CE, constant": ("gates-ce", CE, "constant", False),
    "gates (CE) + FT CE, cosine": ("gates-ce", CE, "cosine", False),
    "gates (KD) + FT KD, constant": ("gates-kd", KD, "constant", False),
    "gates (KD) + FT KD, cosine": ("gates-kd", KD, "cosine", False),
    "l1 + FT KD, cosine": ("l1", KD, "cosine", False),
    "uniform + FT KD, cosine": ("uniform", KD, "cosine", False),
    "gates (KD) structure from scratch, CE, cosine": ("gates-kd", CE, "cosine", True),
    "uniform structure from scratch, CE, cosine": ("uniform", CE, "cosine", True),
}
SCRATCH_KD = {
    "gates (KD) structure from scratch, KD, cosine": ("gates-kd", KD, "cosine", True),
    "uniform structure from scratch, KD, cosine": ("uniform", KD, "cosine", True),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "samples/resnet_seed.onnx"))
    parser.add_argument("--data", default=str(ROOT / "samples/loader.py"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=60, help="S: gates' structure steps")
    parser.add_argument("--finetune-steps", type=int, default=60, help="F")
    parser.add_argument("--scratch-kd", action="store_true")
    parser.add_argument("--raw", default=str(ROOT / "benchmarks/RESULTS_recovery.json"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/RESULTS_recovery.md"))
    return parser.parse_args()


def structure(args, analysis, kind: str, budget: float, seed: int, data: str):
    """The sliced model of a structure (gates: learnt in S steps, not fine-tuned)."""
    if kind.startswith("gates"):
        from onnxmorph.methods.gated import learn_structure

        _, sliced, extra = learn_structure(
            analysis, data=data, target="flops", budget=budget, rules=SelectionRules(),
            steps=args.steps, finetune_steps=0, seed=seed,
            loss=CE if kind == "gates-ce" else KD)
        return sliced, extra["accuracy_after_slice"]
    result = onnxmorph.prune(args.model, method=kind, budget=budget, verify=False)
    return result.model, None


def train(args, seed_model, sliced, data: str, loss: str, schedule: str, reinit: bool,
          steps: int, seed: int):
    from onnxmorph.methods.gated import finetune_on_data

    tuned, _ = finetune_on_data(seed_model, sliced, data, steps=1, finetune_steps=steps,
                                loss=loss, lr_schedule=schedule, reinit=reinit, seed=seed)
    return tuned


def loader_for(seed: int, folder: Path, base: str) -> str:
    """The sample loader with its shuffle seeded by `seed` (seed 0: the loader itself)."""
    if seed == 0:
        return base
    path = folder / f"loader_seed{seed}.py"
    path.write_text(f"import importlib.util\n_s = importlib.util.spec_from_file_location("
                    f"'base_loader', {base!r})\n_m = importlib.util.module_from_spec(_s)\n"
                    f"_s.loader.exec_module(_m)\n_m.BASE_SEED = {seed * 1000}\n"
                    "train_batches, eval_batches = _m.train_batches, _m.eval_batches\n")
    return str(path)


def main() -> None:
    args = parse_args()
    rows = dict(ROWS, **(SCRATCH_KD if args.scratch_kd else {}))
    raw_path = Path(args.raw)
    done = json.loads(raw_path.read_text()) if raw_path.exists() else {"runs": []}
    done.setdefault("meta", {}).update(started=done.get("meta", {}).get("started") or _now(),
                                       load_start=done.get("meta", {}).get("load_start")
                                       or _load(), command=" ".join(sys.argv))
    have = {(r["row"], r["budget"], r["seed"]) for r in done["runs"]}
    analysis = analyze(args.model)
    seed_model = analysis.loaded.model
    total = args.steps + args.finetune_steps
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            for seed in args.seeds:
                data = loader_for(seed, Path(tmp), args.data)
                source = DataSource(data, model_input_specs(seed_model))
                done["meta"]["seed_accuracy"] = evaluate(seed_model, source).accuracy
                structures: dict = {}
                for name, (kind, loss, schedule, reinit) in rows.items():
                    if (name, budget, seed) in have:
                        continue
                    run = {"row": name, "budget": budget, "seed": seed}
                    start = time.perf_counter()
                    try:
                        if kind not in structures:
                            structures[kind] = structure(args, analysis, kind, budget, seed,
                                                         data)
                        sliced, after_slice = structures[kind]
                        # gates rows: S steps went into the structure; the others train T
                        steps = args.finetune_steps if kind.startswith("gates") and not reinit \
                            else total
                        tuned = train(args, seed_model, sliced, data, loss, schedule, reinit,
                                      steps, seed)
                        run.update(accuracy=evaluate(tuned, source).accuracy,
                                   after_slice=after_slice, train_steps=steps,
                                   macs_ratio=analyze(tuned).macs / analysis.macs)
                    except Exception as exc:  # one failed run must not lose the others
                        traceback.print_exc()
                        run["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                    run["wall_s"] = time.perf_counter() - start
                    done["runs"].append(run)
                    done["meta"].update(finished=_now(), load_end=_load())
                    raw_path.write_text(json.dumps(done, indent=1))
                    Path(args.out).write_text(render(done, args, rows))
                    print(f"{name} @ {budget} seed {seed}: {run.get('accuracy')} "
                          f"({run['wall_s']:.0f} s)", flush=True)


def render(done: dict, args, rows: dict) -> str:
    meta = done["meta"]
    lines = ["# Recovering accuracy after pruning, at an equal training budget (issue 16)", "",
             f"- command: `{meta['command']}`",
             f"- date: {meta['started']} → {meta.get('finished')}; machine: "
             f"{platform.platform()}, {os.cpu_count()} CPUs **shared by 6 engineers** "
             "(wall times are indicative only)",
             f"- load average (1/5/15 min): {meta['load_start']} at the start → "
             f"{meta.get('load_end')} at the end",
             f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxmorph "
             f"{onnxmorph.__version__}",
             f"- ResNet sample, seed accuracy {pct(meta.get('seed_accuracy'))} on the 2000 test "
             f"images; every row trains T = S + F = {args.steps} + {args.finetune_steps} = "
             f"{args.steps + args.finetune_steps} steps of 64 images in all (gates: S learning "
             "the structure + F fine-tuning; the others: T fine-tuning or from-scratch steps); "
             "AdamW, lr 2e-3; KD = ce+distill (T = 4, a = 0.5); "
             "seeds change the loader's shuffle, the gates' noise and --reinit's draw", ""]
    for budget in sorted({r["budget"] for r in done["runs"]}, reverse=True):
        lines += [f"## budget {budget:g} × seed MACs", "",
                  "| row | accuracy per seed | mean (spread) | after slice | MACs ratio | "
                  "wall s |", "|---|---|---|---|---|---|"]
        for name in rows:
            mine = [r for r in done["runs"] if r["row"] == name and r["budget"] == budget]
            if not mine:
                continue
            errors = [r["error"] for r in mine if "error" in r]
            if errors:
                lines.append(f"| {name} | failed: {errors[0]} | | | | |")
                continue
            acc = [r["accuracy"] for r in sorted(mine, key=lambda r: r["seed"])]
            slices = [pct(r["after_slice"]) for r in mine if r["after_slice"] is not None]
            lines.append(
                f"| {name} | {' / '.join(pct(a) for a in acc)} | {pct(statistics.mean(acc))} "
                f"({100 * (max(acc) - min(acc)):.1f}) | {' / '.join(slices) or '–'} | "
                f"{statistics.mean(r['macs_ratio'] for r in mine):.3f} | "
                f"{statistics.mean(r['wall_s'] for r in mine):.0f} |")
        lines.append("")
    return "\n".join(lines)


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _load() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
