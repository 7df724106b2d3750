"""Progress feedback: an updating line on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, every: int = 25) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        done = step + 1
        if not self.tty and done % self.every and done != self.total:
            return
        fields = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        if self.tty:
            width = 24
            filled = int(width * done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total}  {fields}  "
                             f"{rate:.1f} it/s ")
            if done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{self.label} step {done}/{self.total}  {fields}\n")
        sys.stderr.flush()
