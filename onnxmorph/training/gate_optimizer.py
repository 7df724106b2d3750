"""Gate updates with one step size for all gates, replacing ORT's AdamW step on the logits.

AdamW normalises every parameter by its own gradient history, so under a cost term every gate
falls at the same pace whatever its cost or its use to the task, and the learned structure
is a uniform shrink. Here the gate gradients are normalised by their joint RMS instead: the
step size is under control, and a gate that costs more, or helps the task less, still moves
further than the others.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.training.session import TrainingSession


class GateOptimizer:
    def __init__(self, names: list[str], logit_scale: float, step_size: float = 0.02,
                 momentum: float = 0.9, limit: float = 8.0) -> None:
        self.names, self.scale = names, logit_scale
        self.step_size, self.momentum, self.limit = step_size, momentum, limit
        self.velocity: np.ndarray | None = None

    def snapshot(self, session: TrainingSession) -> list[np.ndarray]:
        return [session.value(name) for name in self.names]

    def apply(self, session: TrainingSession, before: list[np.ndarray]) -> None:
        """Undo the optimizer's step on the gates and take this one instead."""
        sizes = [b.size for b in before]
        # d loss / d logit = d loss / d stored value / scale (stored value = logit / scale).
        grad = np.concatenate([session.gradient(n).ravel() for n in self.names]) / self.scale
        rms = float(np.sqrt(np.mean(grad**2)))
        direction = grad / rms if rms > 0 else grad
        self.velocity = direction if self.velocity is None else (
            self.momentum * self.velocity + direction)
        logits = np.concatenate([b.ravel() for b in before]) * self.scale
        # Clipped so that a closed gate can still reopen within a few dozen steps.
        logits = np.clip(logits - self.step_size * self.velocity, -self.limit, self.limit)
        for name, part in zip(self.names, np.split(logits / self.scale, np.cumsum(sizes)[:-1])):
            session.set_parameter(name, part.astype(np.float32))
