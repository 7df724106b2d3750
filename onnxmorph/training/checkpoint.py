"""Checkpoints that let an interrupted training run continue (`--resume`) where it stopped.

A run's workdir holds one folder per training phase ("gates", "finetune"). Each phase keeps its
latest checkpoint in `step-NNNNNNN/`:

- `ort.ckpt`: ORT's CheckpointState with the optimizer state (weights, gate logits, BN
  statistics, AdamW moments and step count);
- `ort.ckpt.ranger.npz`: with `--optimizer ranger`, its moments, slow weights and step count;
- `arrays.npz`: numpy state of our own (gate probabilities, the gate optimizer's momentum; the
  final parameters once the phase is done);
- `state.json`: step, the phase's fingerprint, controller state, RNG state, the loader's call
  history (epoch and batch position), the --log offset, history rows.

`latest.json` names the current folder and is replaced atomically after the folder is
complete, so a kill during a save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import onnx

from onnxmorph.errors import Interrupted, OnnxMorphError, TrainingError

CHECKPOINT_EVERY = 50  # default steps between checkpoints
# The phase folder of every method's structure learning (named when only the gates kept one).
STRUCTURE_PHASE = "gates"
_LATEST = "latest.json"
_ARGUMENTS = "arguments.json"


def model_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]


class CheckpointStore:
    """The latest checkpoint of one phase in `folder` (created on the first save)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def save(self, state: dict, arrays: dict[str, np.ndarray], session=None) -> None:
        name = f"step-{int(state['step']):07d}"
        target = self.folder / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        if session is not None:
            session.save_checkpoint(str(target / "ort.ckpt"))
        np.savez(target / "arrays.npz", **arrays)
        (target / "state.json").write_text(json.dumps(state))
        tmp = self.folder / (_LATEST + ".tmp")
        tmp.write_text(json.dumps({"folder": name}))
        os.replace(tmp, self.folder / _LATEST)
        for old in self.folder.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self) -> Checkpoint | None:
        latest = self.folder / _LATEST
        if not latest.is_file():
            return None
        try:
            folder = self.folder / json.loads(latest.read_text())["folder"]
            state = json.loads((folder / "state.json").read_text())
            with np.load(folder / "arrays.npz") as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"the checkpoint in {self.folder} is unreadable ({exc}); run "
                                "again without --resume") from exc
        ort_path = folder / "ort.ckpt"
        return Checkpoint(state, arrays, str(ort_path) if ort_path.exists() else None)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Checkpoint:
    def __init__(self, state: dict, arrays: dict[str, np.ndarray], ort_path: str | None) -> None:
        self.state, self.arrays, self.ort_path = state, arrays, ort_path

    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))


class PhaseCheckpoints:
    """Checkpointing of one training phase: loads the checkpoint to resume from (checking its
    fingerprint), decides when to save, and stops cleanly on SIGINT/SIGTERM.

    Without a workdir nothing is saved (the Python API's default)."""

    def __init__(self, options, phase: str, source, fingerprint: dict) -> None:
        self.phase, self.source = phase, source
        self.fingerprint = fingerprint
        self.every = options.checkpoint_every
        self.store = CheckpointStore(Path(options.workdir, phase)) if options.workdir else None
        self.loaded: Checkpoint | None = None
        if self.store is None:
            return
        if options.resume:
            self.loaded = self.store.load()
        else:
            self.store.clear()
        if self.loaded is not None and self.loaded.state.get("fingerprint") != fingerprint:
            raise TrainingError(_difference(phase, self.loaded.state.get("fingerprint", {}),
                                            fingerprint))

    @property
    def start(self) -> int:
        return int(self.loaded.state["step"]) if self.loaded else 0

    def resumed_batches(self):
        """Replay the loader to the checkpoint; the iterator to continue with (or None)."""
        if self.loaded is None:
            return None
        return self.source.replay(self.loaded.state["loader"], keep_last=not self.loaded.done)

    def due(self, steps_done: int, total: int) -> bool:
        return self.store is not None and steps_done % self.every == 0 and steps_done < total

    def save(self, steps_done: int, state: dict, arrays: dict[str, np.ndarray], session=None,
             done: bool = False) -> None:
        if self.store is None:
            return
        full = {**state, "step": steps_done, "done": done, "fingerprint": self.fingerprint,
                "loader": [list(e) for e in self.source.history]}
        self.store.save(full, arrays, session)


@contextlib.contextmanager
def stop_requests():
    """While training, SIGINT and SIGTERM only set a flag: the loop finishes its step, saves a
    checkpoint and raises Interrupted. A second signal interrupts at once. A signal the
    process was started with ignored (SIGINT of a job a script put in the background with
    `&`) stays ignored, during training as before it."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested:
            raise Interrupted(signum)
        requested.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield requested
    finally:
        for s, old in previous.items():
            # None: a handler set outside Python, which cannot be put back; signal.signal
            # would raise TypeError here and hide the exception that ended training.
            signal.signal(s, old if old is not None else signal.SIG_DFL)


# -- the command line's side: same arguments, where to resume, cleaning up ----------------------

def start_run(workdir: str | os.PathLike, arguments: dict, resume: bool) -> None:
    """A fresh run clears old checkpoints and records its arguments; --resume checks them."""
    folder = Path(workdir)
    recorded_path = folder / _ARGUMENTS
    if resume:
        if not recorded_path.is_file():
            raise TrainingError(f"--resume: no checkpoint in {folder}; run without --resume "
                                "(or pass the --workdir of the interrupted run)")
        recorded = json.loads(recorded_path.read_text())
        if recorded != arguments:
            raise TrainingError(_difference("run", recorded, arguments))
        return
    for child in (STRUCTURE_PHASE, "finetune", _ARGUMENTS):
        path = folder / child
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    recorded_path.write_text(json.dumps(arguments, indent=1))


_NOT_ARGUMENTS = ("workdir", "log", "resume", "quiet", "as_json", "checkpoint_every")


def default_workdir(output: str | os.PathLike) -> Path:
    """Where a command keeps checkpoints unless --workdir says otherwise: next to the output."""
    output = Path(output)
    return output.with_name(output.name + ".onnxmorph-work")


def check_resume(resume: bool, method: str, data: str | None, steps: int,
                 finetune_steps: int, learns: bool) -> None:
    """--resume where nothing trains (no --data, or no steps to run) would be ignored.
    `learns`: the method trains to learn the structure (its registry entry says)."""
    if not resume:
        return
    if data is None:
        raise TrainingError("--resume continues an interrupted training run, and without "
                            "--data nothing trains: pass the same --data as the run to resume")
    if not (learns and steps > 0) and finetune_steps <= 0:
        raise TrainingError(f"--resume has nothing to continue: --method {method} with "
                            "--finetune-steps 0 trains nothing; drop --resume")


@contextlib.contextmanager
def checkpointed_run(workdir: str | os.PathLike, params: dict, resume: bool, owned: bool,
                     unresumable: str | None = None):
    """Around a command that trains: checks --resume against the recorded arguments (`params`,
    the command's options; those that do not change the result are left out), removes the
    checkpoints when the command ends (the whole folder when `owned`), except after SIGINT /
    SIGTERM, which become Interrupted with a line saying how to resume. `unresumable` names
    a method that cannot resume: an interruption then keeps nothing and says so."""
    arguments = {k: v for k, v in params.items() if k not in _NOT_ARGUMENTS}
    arguments = json.loads(json.dumps(arguments, default=str))  # tuples → lists, as stored
    start_run(workdir, arguments, resume)

    def abandon() -> None:
        # Nothing left to resume: the checkpoints go, and so does the --log a fresh run
        # started (a resumed run's log holds the interrupted run's rows: it stays).
        remove_workdir(workdir, whole=owned)
        if not resume and params.get("log"):
            Path(params["log"]).unlink(missing_ok=True)

    try:
        yield
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
        where = resumable(workdir)
        if unresumable is not None:
            abandon()
            raise Interrupted(signum, f"interrupted; --method {unresumable} keeps no checkpoint "
                                      "to resume from: run the command again to start over"
                              ) from None
        if where is None:
            abandon()
            raise Interrupted(signum, "interrupted before the first checkpoint; nothing to "
                                      "resume") from None
        raise Interrupted(signum, f"interrupted; {where} is saved in {workdir}: run the same "
                                  "command with --resume to continue") from None
    except OnnxMorphError:
        # Bad input or a diverging run: resuming would repeat it. A refused --resume keeps
        # the checkpoint, so the user can fix what was refused and resume.
        if not resume:
            abandon()
        raise
    except BaseException:
        if resumable(workdir) is None:
            abandon()
        raise
    remove_workdir(workdir, whole=owned)


def resumable(workdir: str | os.PathLike) -> str | None:
    """"structure learning step 120" or similar when the workdir holds a checkpoint."""
    folder = Path(workdir)
    for phase, label in (("finetune", "fine-tuning"), (STRUCTURE_PHASE, "structure learning")):
        checkpoint = CheckpointStore(folder / phase).load() if (folder / phase).is_dir() else None
        if checkpoint is not None:
            what = "finished" if checkpoint.done else f"step {checkpoint.state['step']}"
            return f"{label} {what}"
    return None


def remove_workdir(workdir: str | os.PathLike, whole: bool) -> None:
    """After success (or a failure that resuming cannot fix): the default workdir goes
    entirely; a --workdir the user chose keeps everything but our checkpoints."""
    folder = Path(workdir)
    if whole:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in (STRUCTURE_PHASE, "finetune"):
        shutil.rmtree(folder / child, ignore_errors=True)
    (folder / _ARGUMENTS).unlink(missing_ok=True)


def _difference(what: str, recorded: dict, now: dict) -> str:
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key) != now.get(key):
            return (f"--resume: {key} was {recorded.get(key)!r} in the interrupted {what} and is "
                    f"{now.get(key)!r} now; resume with the same arguments, or run without "
                    "--resume to start over")
    return f"--resume: the interrupted {what} differs; run without --resume"
