"""Interrupt a real prune with SIGTERM, resume it, and compare with an uninterrupted run.

On samples/resnet_seed.onnx with samples/loader.py (batch 64), `onnxmorph prune --steps S
--finetune-steps F` runs three times as subprocesses, with the same seed:

1. uninterrupted (reference);
2. the same command, sent SIGTERM from outside once its --log shows structure-learning step
   >= K (the CLI finishes the step, writes a checkpoint and exits 143);
3. the same command with --resume.

Reported: exit codes, wall times, accuracy after fine-tuning, MACs ratio, whether the learned
structures are identical, the largest weight and logit differences between the two final
models, and the size of the checkpoint folder at the interruption.

    python benchmarks/bench_resume.py                  # S=300, F=200 (500 steps), K=250
    python benchmarks/bench_resume.py --steps 20 --finetune-steps 10 --stop-at 12  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "samples" / "resnet_seed.onnx"
LOADER = ROOT / "samples" / "loader.py"


def _command(out: Path, log: Path, args, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from onnxmorph.cli.main import main; main()", "prune",
            str(MODEL), "--data", str(LOADER), "--budget", str(args.budget), "--steps",
            str(args.steps), "--finetune-steps", str(args.finetune_steps), "--checkpoint-every",
            str(args.checkpoint_every), "-o", str(out), "--log", str(log), "--quiet", "--json",
            *extra]


def _run(command: list[str], log: Path | None = None, stop_at: int | None = None):
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    if stop_at is not None:
        while process.poll() is None:
            rows = log.read_text().splitlines() if log.exists() else []
            if any(json.loads(r)["phase"] == "structure" and json.loads(r)["step"] >= stop_at
                   for r in rows[-3:]):
                process.send_signal(signal.SIGTERM)
                break
            time.sleep(0.2)
    stdout, stderr = process.communicate()
    return process.returncode, time.perf_counter() - start, stdout, stderr


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _compare(a: Path, b: Path) -> tuple[float, float]:
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    weights = max(float(np.abs(numpy_helper.to_array(x) - numpy_helper.to_array(y)).max())
                  for x, y in zip(ma.graph.initializer, mb.graph.initializer))
    with np.load(ROOT / "samples" / "fashion_mnist_subset.npz") as npz:
        x = ((npz["x_test"][:256].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    logits = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
              .run(None, {"input": x})[0] for p in (a, b)]
    return weights, float(np.abs(logits[0] - logits[1]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--stop-at", type=int, default=250)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_resume.md"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_resume-"))
    ref, ref_log = folder / "reference.onnx", folder / "reference.jsonl"
    out, log = folder / "resumed.onnx", folder / "resumed.jsonl"

    rc_ref, t_ref, stdout_ref, err = _run(_command(ref, ref_log, args))
    assert rc_ref == 0, err
    rc_stop, t_stop, _, err_stop = _run(_command(out, log, args), log, args.stop_at)
    work = folder / "resumed.onnx.onnxmorph-work"
    checkpoint_bytes = _folder_size(work)
    rc_res, t_res, stdout_res, err = _run(_command(out, log, args, "--resume"))
    assert rc_res == 0, err
    report_ref, report_res = json.loads(stdout_ref), json.loads(stdout_res)
    same_structure = (ref.with_suffix(".structure.json").read_text()
                      == out.with_suffix(".structure.json").read_text())
    weights, logits = _compare(ref, out)
    same_log = ref_log.read_text() == log.read_text()
    message = err_stop.strip().splitlines()[-1] if err_stop.strip() else ""

    command = "python benchmarks/bench_resume.py " + " ".join(sys.argv[1:])
    lines = [
        "# Resume after SIGTERM vs an uninterrupted run",
        "",
        f"- date: {datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()} (other jobs shared the CPUs: wall times are indicative)",
        f"- onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}",
        f"- command: `{command.strip()}`",
        f"- prune `samples/resnet_seed.onnx` on `samples/loader.py` (batch 64), budget "
        f"{args.budget} × MACs, {args.steps} structure-learning + {args.finetune_steps} "
        f"fine-tune steps, checkpoint every {args.checkpoint_every} steps, seed 0",
        f"- SIGTERM sent once the --log showed structure-learning step >= {args.stop_at}",
        "",
        "| run | exit code | wall s | accuracy after | MACs ratio |",
        "|---|---|---|---|---|",
        f"| uninterrupted | {rc_ref} | {t_ref:.1f} | {report_ref['accuracy_after']:.4f} | "
        f"{report_ref['ratio']['macs']:.4f} |",
        f"| interrupted (SIGTERM) | {rc_stop} | {t_stop:.1f} | – | – |",
        f"| --resume | {rc_res} | {t_res:.1f} | {report_res['accuracy_after']:.4f} | "
        f"{report_res['ratio']['macs']:.4f} |",
        "",
        f"- message at the interruption: `{message}`",
        f"- checkpoint folder at the interruption: {checkpoint_bytes / 1e6:.2f} MB",
        f"- identical structure.json: {same_structure}; identical --log: {same_log}",
        f"- largest weight difference: {weights:.3g}; largest logit difference on 256 test "
        f"images: {logits:.3g}",
        f"- interrupted + resumed wall time: {t_stop + t_res:.1f} s against {t_ref:.1f} s "
        "(the resumed run rebuilds the training artifacts, evaluates the seed again and "
        "replays the loader to its position)",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
