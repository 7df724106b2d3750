"""Budget controller: turns "keep 50 % of the FLOPs" into a regularisation strength λ.

Instead of sweeping λ over orders of magnitude (morph-net's usage), λ grows multiplicatively
while the structure the gates describe (channels above the alive threshold) is over budget and
decays once it is under, so training settles at or just under the budget.
"""

from __future__ import annotations

import math


class BudgetController:
    def __init__(self, budget: float, strength: float | None = None, initial: float = 0.5,
                 rate: float = 0.1) -> None:
        self.budget = budget
        self.fixed = strength is not None
        self.lam = float(strength) if strength is not None else initial
        self.rate = rate

    def update(self, cost_ratio: float) -> float:
        """Feed the current structure's cost / seed cost; get the λ for the next steps."""
        if not self.fixed:
            # The step is proportional to how far off budget we are, capped for stability.
            error = max(-1.0, min(1.0, (cost_ratio - self.budget) / self.budget))
            self.lam *= math.exp(self.rate * (error if error > 0 else 0.5 * error - 0.05))
            self.lam = min(max(self.lam, 1e-4), 1e4)
        return self.lam
