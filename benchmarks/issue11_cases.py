"""The cases of issue 11's "Why" (and its "What to build"), one function each.

Each case gets an empty folder of its own, builds its inputs there, runs the real CLI in a
subprocess (benchmarks/issue11_harness.py) and returns (passed, detail).
benchmarks/check_issue11.py runs them and writes benchmarks/RESULTS_issue11.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.issue11_harness import (
    RESNET,
    TRAIN,
    _command,
    _env,
    refused,
    renamed_input_model,
    run,
    run_on_tty,
    seed_in,
    snapshot,
    terminal_signals,
    write_loader,
)

CASES: list[tuple[str, str, Callable[[Path], tuple[bool, str]]]] = []


def case(group: str, name: str):
    def register(function):
        CASES.append((group, name, function))
        return function
    return register


def _refuse(folder: Path, args: list, needle: str = "", **kw) -> tuple[bool, str]:
    before = snapshot(folder)
    return refused(run(args, folder, **kw), folder, before, needle)


# -------------------------------------------------------------------------- -o is the input
def _alias(folder: Path, how: str) -> tuple[Path, Path]:
    seed = seed_in(folder)
    if how == "same path":
        return seed, seed
    link = folder / "link.onnx"
    os.link(seed, link) if how == "hard link" else link.symlink_to(seed)
    return seed, link


for _cmd in ("prune", "expand", "finetune"):
    for _how in ("same path", "hard link", "symlink"):
        def _output_is_input(folder, command=_cmd, how=_how):
            seed, out = _alias(folder, how)
            extra = {"prune": ["--method", "l1"], "expand": ["--width", "0.5"],
                     "finetune": ["--data", write_loader(folder / "l.py", "labeled")]}[command]
            return _refuse(folder, [command, seed, "-o", out, *extra], "is the input")
        case("-o is the input", f"{_cmd} -o = input ({_how})")(_output_is_input)


# -------------------------------------------------------------------------- unwritable places
def _read_only(folder: Path) -> Path:
    ro = folder / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


@case("unwritable", "prune -o into a read-only folder (l1)")
def _ro_l1(folder):
    ro = _read_only(folder)
    seed = seed_in(folder)
    return _refuse(folder, ["prune", seed, "--method", "l1", "-o", ro / "o.onnx"],
                   "cannot write", obey_modes=True)


@case("unwritable", "prune --data -o into a read-only folder: refused before training")
def _ro_data(folder):
    ro = _read_only(folder)
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "labeled")
    return _refuse(folder, ["prune", seed, "--data", loader, *TRAIN, "-o", ro / "o.onnx"],
                   "cannot write", obey_modes=True)


@case("unwritable", "prune -o on a read-only mount (EROFS, root too)")
def _ro_mount(folder):
    mount = folder / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                            str(mount)], capture_output=True).returncode:
        return None, "not run: needs root to mount"
    try:
        return _refuse(folder, ["prune", seed_in(folder), "--method", "l1", "-o",
                                mount / "o.onnx"], "cannot write")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@case("unwritable", "--log in a missing folder: refused before training")
def _log_missing(folder):
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "labeled")
    return _refuse(folder, ["prune", seed, "--data", loader, *TRAIN, "-o", folder / "o.onnx",
                            "--log", folder / "missing" / "t.jsonl"], "does not exist")


# -------------------------------------------------------------------------- failing writes
def _old_set(folder: Path) -> tuple[Path, dict]:
    seed = seed_in(folder)
    out = folder / "o.onnx"
    first = run(["prune", seed, "--method", "l1", "--budget", "0.7", "-o", out], folder)
    assert first.rc == 0, first.stderr
    return out, snapshot(folder)


for _limit, _which in ((4000, "structure.json"), (30000, "structure.png"),
                       (150000, "o.onnx")):
    def _ulimit(folder, limit=_limit, which=_which):
        out, before = _old_set(folder)
        ok, detail = refused(run(["prune", folder / "seed.onnx", "--method", "l1", "-o", out],
                                 folder, fsize=limit), folder, before, "could not write")
        names = f"{which}'" in detail.split("|")[-1]  # the file itself, not a temporary
        return ok and names, detail if names else f"message does not name {which} | {detail}"
    case("failing writes", f"ulimit -f {_limit} B (fails on {_which}): old set kept, no .tmp, "
         "file named")(_ulimit)


for _size, _which in ("40k", "structure.png"), ("200k", "o.onnx"):
    def _disk_full(folder, size=_size, which=_which):
        seed = seed_in(folder)
        mount = folder / "full"
        mount.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                                                "tmpfs", str(mount)],
                                               capture_output=True).returncode:
            return None, "not run: needs root to mount"
        try:
            ok, detail = _refuse(folder, ["prune", seed, "--method", "l1",
                                          "-o", mount / "o.onnx"], "could not write")
            names = f"{which}'" in detail.split("|")[-1]  # the file itself, not a temporary
            return ok and names, detail if names else f"message does not name {which} | {detail}"
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    case("failing writes", f"disk full ({_size} tmpfs, fails on {_which}): nothing written, "
         "file named")(_disk_full)


# -------------------------------------------------------------------------- bad data
for _kind in ("label50", "label-3", "onehot"):
    for _cmd in ("prune", "finetune", "eval"):
        def _bad_labels(folder, kind=_kind, command=_cmd):
            seed, loader = seed_in(folder), write_loader(folder / "l.py", kind)
            args = {"prune": ["prune", seed, "--data", loader, *TRAIN, "-o", folder / "o.onnx"],
                    "finetune": ["finetune", seed, "--data", loader, "--steps", "2",
                                 "-o", folder / "o.onnx"],
                    "eval": ["eval", seed, "--data", loader]}[command]
            return _refuse(folder, args, "label")
        case("bad data", f"{_cmd} with labels {_kind}")(_bad_labels)


@case("bad data", "eval on all-NaN inputs")
def _nan_eval(folder):
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "nan")
    return _refuse(folder, ["eval", seed, "--data", loader], "NaN")


@case("bad data", "a fresh run failing in training (bad labels in train batch 3) removes its "
     "--log and workdir")
def _late_bad(folder):
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "late_bad")
    return _refuse(folder, ["prune", seed, "--data", loader, *TRAIN, "-o", folder / "o.onnx",
                            "--log", folder / "t.jsonl"], "label")


# -------------------------------------------------------------------------- compared models
for _args in (["verify", "SEED", "OTHER"], ["eval", "SEED", "--data", "L", "--reference", "OTHER"],
              ["finetune", "SEED", "--data", "L", "--teacher", "OTHER", "--steps", "2",
               "-o", "O"]):
    def _names(folder, args=_args):
        seed, other = seed_in(folder), renamed_input_model(folder / "other.onnx")
        loader = write_loader(folder / "l.py", "labeled")
        values = {"SEED": seed, "OTHER": other, "L": loader, "O": folder / "o.onnx"}
        return _refuse(folder, [values.get(a, a) for a in args], "input")
    case("compared models", f"{_args[0]} {' '.join(a for a in _args if a.startswith('--'))} "
         "with other input names")(_names)


# -------------------------------------------------------------------------- option ranges
for _args, _needle in (
        (["verify", "SEED", "SEED", "--tolerance", "-1"], "--tolerance"),
        (["verify", "SEED", "SEED", "--tolerance", "nan"], "--tolerance"),
        (["verify", "SEED", "SEED", "--atol", "-1"], "--atol"),
        (["verify", "SEED", "SEED", "--rtol", "nan"], "--rtol"),
        (["prune", "SEED", "--strength", "-5", "--data", "L"], "--strength"),
        (["prune", "SEED", "--budget", "0"], "budget"),
        (["prune", "SEED", "--budget", "nan"], "budget"),
        (["prune", "SEED", "--lr", "-1", "--data", "L"], "--lr"),
        (["prune", "SEED", "--steps", "0", "--data", "L"], "--steps"),
        (["expand", "SEED", "--width", "-2"], "--width"),
        (["prune", "SEED", "--bogus"], "--bogus"),
        (["prune", "SEED", "--method", "nonsense"], "nonsense"),
        (["--bogus", "prune", "SEED"], "--bogus"),
        (["prune"], "MODEL"),
        (["nocommand"], "nocommand"),
        (["prune", "SEED", "--method", "gdp", "--data", "L", "--resume"], "no checkpoint"),
        (["prune", "SEED", "--method", "gamma", "--data", "L", "--resume"], "no checkpoint"),
        (["prune", "SEED", "--method", "group-lasso", "--data", "L", "--resume"], "no checkpoint"),
        (["prune", "SEED", "--method", "l1", "--resume"], "--resume"),
        (["prune", "SEED", "--data", "L", "--resume", "-o", "O"], "no checkpoint"),
        (["prune", "MISSING"], "MISSING"),
        (["prune", "L", "--method", "l1"], "ONNX"),
):
    def _option(folder, args=_args, needle=_needle):
        values = {"SEED": seed_in(folder), "L": write_loader(folder / "l.py", "labeled"),
                  "O": folder / "o.onnx", "MISSING": folder / "MISSING.onnx"}
        return _refuse(folder, [values.get(a, a) for a in args], needle)
    case("options", " ".join(a if a not in ("SEED", "L", "O") else a.lower()
                             for a in _args))(_option)


# -------------------------------------------------------------------------- signals
def _interrupt(folder: Path, sig: int, mark_at: int) -> tuple[subprocess.CompletedProcess, dict]:
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "labeled", n=512)
    scratch, marker = folder / "tmp", folder / "marker"
    scratch.mkdir()
    args = ["prune", seed, "--data", loader, "--steps", "40", "--finetune-steps", "4",
            "--checkpoint-every", "3", "-o", folder / "o.onnx", "--log", folder / "t.jsonl"]
    env = _env({"TMPDIR": str(scratch), "MARK_FILE": str(marker), "MARK_AT": str(mark_at)})
    proc = subprocess.Popen([*_command(), *map(str, args)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_signals)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), {
        "args": args, "scratch": scratch}


for _sig, _code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
    def _mid_training(folder, sig=_sig, code=_code):
        done, info = _interrupt(folder, sig, mark_at=10)
        problems = []
        if done.returncode != code:
            problems.append(f"exit {done.returncode}")
        last = done.stderr.strip().splitlines()[-1:] or [""]
        if "Traceback" in done.stderr:
            problems.append("traceback")
        if "--resume" not in last[0]:
            problems.append("does not say how to resume")
        if list(info["scratch"].iterdir()):
            problems.append(f"temp left: {[p.name for p in info['scratch'].iterdir()]}")
        log = folder / "t.jsonl"
        if log.exists() and not log.read_text().endswith("\n"):
            problems.append("partial --log line")
        if (folder / "o.onnx").exists():
            problems.append("output written")
        if not problems:  # and --resume finishes it
            again = run([*info["args"], "--resume"], folder)
            if again.rc != 0 or not (folder / "o.onnx").exists():
                problems.append(f"--resume: exit {again.rc} {again.lines[-1:]}")
            elif list(folder.glob("*.onnxmorph-work")):
                problems.append("workdir left after success")
        return not problems, "; ".join(problems) + (" | " if problems else "") + last[0][:140]
    case("signals", f"{signal.Signals(_sig).name} during structure learning: exit {_code}, "
         "temp gone, whole --log lines, says how to resume, --resume finishes")(_mid_training)

    def _early(folder, sig=_sig, code=_code):
        done, info = _interrupt(folder, sig, mark_at=1)
        problems = [f"exit {done.returncode}"] if done.returncode != code else []
        left = sorted(p.name for p in folder.iterdir()) != ["l.py", "marker", "seed.onnx", "tmp"]
        if left:
            problems.append(f"left: {sorted(p.name for p in folder.iterdir())}")
        if list(info["scratch"].iterdir()) or "Traceback" in done.stderr:
            problems.append("temp left or traceback")
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return not problems, "; ".join(problems) + (" | " if problems else "") + last[:140]
    case("signals", f"{signal.Signals(_sig).name} before the first step: exit {_code}, no "
         "--log, no workdir")(_early)


# -------------------------------------------------------------------------- modes, progress
for _umask, _mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
    def _modes(folder, umask=_umask, mode=_mode):
        seed = seed_in(folder)
        done = run(["prune", seed, "--method", "l1", "-o", folder / "o.onnx"], folder,
                   umask=umask)
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.glob("o.*")}
        ok = done.rc == 0 and len(modes) == 4 and set(modes.values()) == {oct(mode)}
        return ok, f"exit {done.rc}, {modes}"
    case("files", f"modes follow umask {_umask:03o} → {_mode:o}")(_modes)


def _train(folder: Path, *extra) -> list:
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "labeled")
    return ["prune", seed, "--data", loader, "--steps", "30", "--finetune-steps", "2",
            "-o", folder / "o.onnx", *extra]


@case("progress", "terminal: a tqdm bar with rate and time left")
def _tty(folder):
    done = run_on_tty(_train(folder), folder)
    ok = done.rc == 0 and "step/s" in done.stderr and "<" in done.stderr and "\r" in done.stderr
    tail = done.stderr.strip().splitlines()[-1][-100:] if ok else done.stderr[-200:]
    return ok, f"exit {done.rc}; {tail!r}"


@case("progress", "not a terminal: plain lines with rate and time left")
def _plain(folder):
    done = run(_train(folder), folder)
    lines = [x for x in done.lines if "step/s" in x and "left" in x]
    ok = done.rc == 0 and bool(lines) and "\r" not in done.stderr
    return ok, (lines or done.lines or [""])[0]


@case("progress", "--quiet: nothing on stderr (ORT warnings included)")
def _quiet(folder):
    done = run(_train(folder, "--quiet"), folder)
    return done.rc == 0 and not done.stderr.strip(), f"exit {done.rc}; stderr {done.stderr[:200]!r}"


@case("progress", "--quiet with --method taylor: onnxruntime's session warnings silenced too")
def _quiet_taylor(folder):
    seed, loader = seed_in(folder), write_loader(folder / "l.py", "labeled")
    done = run(["prune", seed, "--method", "taylor", "--data", loader, "--finetune-steps", "2",
                "--calibration-batches", "1", "-o", folder / "o.onnx", "--quiet"], folder)
    return done.rc == 0 and not done.stderr.strip(), f"exit {done.rc}; stderr {done.stderr[:200]!r}"


@case("progress", "--json: JSON on stdout, nothing on stderr")
def _json(folder):
    done = run(_train(folder, "--json"), folder)
    try:
        json.loads(done.stdout)
        parsed = True
    except ValueError:
        parsed = False
    ok = done.rc == 0 and parsed and not done.stderr.strip()
    return ok, f"exit {done.rc}; json {parsed}; stderr {done.stderr[:200]!r}"


for _family, _count in (("cnn", 30), ("transformer", 28)):
    def _fuzz(folder, family=_family, count=_count):
        from tests.fuzz_cases import outcome_of, run_cases

        results = run_cases(list(range(count)), seed=11, case_timeout=60.0, family=family)
        outcomes: dict[str, int] = {}
        for r in results:
            outcomes[outcome_of(r)] = outcomes.get(outcome_of(r), 0) + 1
        return set(outcomes) <= {"ok", "refused"}, str(outcomes)
    case("fuzzing", f"{_count} mutated {_family} models (analyze, prune --method l1): no "
         "traceback, crash or bad output")(_fuzz)


_ = RESNET  # the sample every case copies
