"""Learning-rate schedules: the rate of a training step as a pure function of that step.

Training loops call `learning_rate(...)` before every step and hand the result to
`TrainingSession.set_learning_rate`. Because the rate depends on nothing but the step, a
resumed run continues on exactly the curve the interrupted run was on.

- `auto` (the default): `constant` while learning the structure, `cosine` while fine-tuning.
  Cosine in structure learning too was tried: the sample ResNet fine-tuned no worse, but
  without a cost term gates closed that stay open at a constant rate (a test of the gates'
  dynamics), so structure learning keeps its constant rate unless asked.
- `constant`: `base` at every step.
- `cosine`: linear warm-up from `base / warmup_steps` to `base` over the first
  `warmup_steps = round(warmup_fraction * total)` steps, then half a cosine from `base` down
  to 0 at step `total` (never reached: the last step gets a small positive rate).
- `one-cycle` (Smith & Topin, as PyTorch's OneCycleLR with cosine annealing): from
  `base / ONE_CYCLE_DIV` up to `base` over the first `ONE_CYCLE_PCT_START` of the steps, then
  down to `base / ONE_CYCLE_DIV / ONE_CYCLE_FINAL_DIV` by the last step, both halves cosine.
"""

from __future__ import annotations

import math

from onnxmorph.errors import TrainingError

SCHEDULES = ("auto", "constant", "cosine", "one-cycle")
DEFAULT_SCHEDULE = "auto"
PHASES = ("structure", "finetune")  # structure learning; any phase that trains weights only
WARMUP_FRACTION = 0.05  # of the phase's steps: warm-up of the cosine schedule
ONE_CYCLE_PCT_START = 0.3  # PyTorch's OneCycleLR defaults
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule '{schedule}'; use one of "
                            f"{', '.join(SCHEDULES)}")
    return schedule


def warmup_steps(total: int, warmup_fraction: float = WARMUP_FRACTION) -> int:
    return min(int(round(warmup_fraction * total)), max(total - 1, 0))


def resolve(schedule: str, phase: str = "finetune") -> str:
    """The schedule a phase runs: `auto` becomes constant or cosine by phase."""
    check_schedule(schedule)
    if phase not in PHASES:
        raise TrainingError(f"unknown training phase '{phase}'; use one of {', '.join(PHASES)}")
    if schedule != "auto":
        return schedule
    return "constant" if phase == "structure" else "cosine"


def learning_rate(schedule: str, base: float, step: int, total: int,
                  warmup_fraction: float = WARMUP_FRACTION, phase: str = "finetune") -> float:
    """The rate of step `step` (0-based) of `total` steps under `schedule` in `phase`."""
    schedule = resolve(schedule, phase)
    if total < 1 or not 0 <= step < total:
        raise TrainingError(f"learning rate asked for step {step} of a {total}-step phase")
    if not 0 <= warmup_fraction < 1:
        raise TrainingError("the warm-up fraction must be in [0, 1)")
    if schedule == "constant":
        return float(base)
    if schedule == "cosine":
        warm = warmup_steps(total, warmup_fraction)
        if step < warm:
            return float(base * (step + 1) / warm)
        return _cosine(base, 0.0, (step - warm) / (total - warm))
    initial = base / ONE_CYCLE_DIV
    rise = ONE_CYCLE_PCT_START * total
    if step < rise:
        return _cosine(initial, base, step / rise)
    fall = max(total - 1 - rise, 1.0)
    return _cosine(base, initial / ONE_CYCLE_FINAL_DIV, min((step - rise) / fall, 1.0))


def _cosine(start: float, end: float, fraction: float) -> float:
    """Half a cosine from `start` (fraction 0) to `end` (fraction 1)."""
    return float(end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction)))
