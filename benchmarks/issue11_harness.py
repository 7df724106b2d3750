"""Running the real `onnxmorph` command in subprocesses for benchmarks/issue11_cases.py.

A refusal passes when: exit code 2, exactly one line on stderr starting with
"onnxmorph: error: ", no traceback, and the folder (inputs included) byte for byte as before.
"""

from __future__ import annotations

import os
import pty
import resource
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"
NPZ = SAMPLES / "fashion_mnist_subset.npz"

# -------------------------------------------------------------------------- running the CLI
@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def _command() -> list[str]:
    return [sys.executable, "-c", "import sys; from onnxmorph.cli.main import main; "
            "sys.argv[0] = 'onnxmorph'; main()"]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return {**env, **(extra or {})}


# Root writes into read-only folders: without these capabilities it obeys the mode bits.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def run(args: list, cwd: Path, env: dict | None = None, umask: int | None = None,
        fsize: int | None = None, obey_modes: bool = False, timeout: float = 300) -> Run:
    def prepare() -> None:
        if umask is not None:
            os.umask(umask)
        if fsize is not None:  # `ulimit -f`: Python ignores SIGXFSZ, so writes get EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    start = time.perf_counter()
    prefix = NO_DAC if obey_modes and os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *_command(), *map(str, args)], cwd=cwd, env=_env(env),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=prepare)
    return Run(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def run_on_tty(args: list, cwd: Path, timeout: float = 300) -> Run:
    """stderr on a pseudo-terminal (a progress bar's home); stdout piped."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen([*_command(), *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
    proc.wait()
    os.close(master)
    stdout = proc.stdout.read()
    proc.stdout.close()
    return Run(proc.returncode, stdout, b"".join(chunks).decode(errors="replace"),
               time.perf_counter() - start)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"",
                                         p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


def refused(result: Run, folder: Path, before: dict, needle: str = "") -> tuple[bool, str]:
    """Exit 2, one line, nothing written, nothing changed."""
    problems = []
    if result.rc != 2:
        problems.append(f"exit {result.rc}")
    if len(result.lines) != 1 or not result.lines[0].startswith("onnxmorph: error: "):
        problems.append(f"{len(result.lines)} lines on stderr")
    if "Traceback" in result.stderr:
        problems.append("traceback")
    if needle and needle not in result.stderr:
        problems.append(f"message lacks {needle!r}")
    after = snapshot(folder)
    if after != before:
        changed = sorted(set(after) ^ set(before)) or sorted(
            k for k in after if after[k] != before.get(k))
        problems.append(f"folder changed: {changed[:4]}")
    first = result.lines[0] if result.lines else ""
    detail = "; ".join(problems) if problems else ""
    return not problems, (f"{detail} | " if detail else "") + first[:160]


# -------------------------------------------------------------------------- inputs
_LOADER = """
import os
import numpy as np
_npz = np.load({npz!r})
X = ((((_npz["x_train"][:{n}].astype(np.float32) / 255.0) - 0.2860) / 0.3530)[:, None])
Y = _npz["y_train"][:{n}].astype(np.int64)
_drawn = 0
def _mark():
    global _drawn
    _drawn += 1
    marker = os.environ.get("MARK_FILE")
    if marker and _drawn == int(os.environ.get("MARK_AT", "0")):
        open(marker, "w").close()
{body}
def train_batches():
    for i in range(0, {n}, 32):
        _mark()
        yield batch(i)
def eval_batches():
    for i in range(0, {n}, 32):
        yield eval_batch(i) if "eval_batch" in globals() else batch(i)
"""

LOADERS = {
    "labeled": "def batch(i):\n    return X[i:i + 32], Y[i:i + 32]",
    "label50": "def batch(i):\n    return X[i:i + 32], np.full(32, 50, np.int64)",
    "label-3": "def batch(i):\n    return X[i:i + 32], np.full(32, -3, np.int64)",
    "onehot": "def batch(i):\n    return X[i:i + 32], np.eye(10, dtype=np.int64)[Y[i:i + 32]]",
    "nan": "def batch(i):\n    return np.full_like(X[i:i + 32], np.nan), Y[i:i + 32]",
    # Good for two batches, then labels out of range: fails after training has started.
    "late_bad": "def batch(i):\n    return X[i:i + 32], (Y[i:i + 32] if i < 64 else "
                "np.full(32, 50, np.int64))\ndef eval_batch(i):\n    return X[i:i + 32], "
                "Y[i:i + 32]",
}


def write_loader(path: Path, kind: str, n: int = 128) -> Path:
    path.write_text(_LOADER.format(npz=str(NPZ), n=n, body=LOADERS[kind]))
    return path


def renamed_input_model(path: Path) -> Path:
    model = onnx.load(str(RESNET))
    old = model.graph.input[0].name
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "pixels"
    onnx.save(model, str(path))
    return path


def seed_in(folder: Path) -> Path:
    path = folder / "seed.onnx"
    shutil.copy(RESNET, path)
    return path


TRAIN = ["--steps", "6", "--finetune-steps", "2"]
