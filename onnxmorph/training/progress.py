"""Progress feedback: a tqdm bar on a terminal, plain lines every few steps otherwise, and the
JSON-lines training log."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from onnxmorph.errors import TrainingError


class Progress:
    """`enabled=False` (--json, --quiet) prints nothing. `initial` is the step a resumed run
    starts from: rate and time left count only the steps this process ran."""

    def __init__(self, total: int, label: str, enabled: bool = True, every: int = 25,
                 initial: int = 0) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.tty = sys.stderr.isatty()
        self.initial = initial
        self.start = time.perf_counter()
        self.bar = None
        if enabled and self.tty:
            self.bar = tqdm(total=total, initial=initial, desc=label, unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=True)

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        done = step + 1
        fields = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix_str(fields, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        if done % self.every and done != self.total:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (done - self.initial) / elapsed
        left = tqdm.format_interval((self.total - done) / rate) if rate > 0 else "?"
        sys.stderr.write(f"{self.label} step {done}/{self.total}  {fields}  "
                         f"{rate:.2f} step/s  {left} left\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainingLog:
    """The --log file: one JSON object per line, flushed line by line, so an interruption
    never leaves half a line. `offset()` is where a checkpoint's rows end; a resumed run cuts
    the file back to it (`resume_at`) before appending."""

    def __init__(self, path: str | None, append: bool = False,
                 resume_at: int | None = None) -> None:
        self.path = path
        self.file = None
        if path is None:
            return
        if resume_at is not None:
            size = Path(path).stat().st_size if Path(path).is_file() else -1
            if size < resume_at:
                raise TrainingError(f"--log {path} is shorter than at the checkpoint; restore "
                                    "it or run again without --resume")
            self.file = open(path, "r+")  # noqa: SIM115
            self.file.truncate(resume_at)
            self.file.seek(resume_at)
        else:
            self.file = open(path, "a" if append else "w")  # noqa: SIM115

    def write(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def offset(self) -> int | None:
        return self.file.tell() if self.file is not None else None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
