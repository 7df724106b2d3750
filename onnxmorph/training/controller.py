"""Budget controller: turns "keep 50 % of the FLOPs" into a regularisation strength λ.

Instead of sweeping λ over orders of magnitude (morph-net's usage), the strength grows
multiplicatively while the structure the gates describe (channels above the alive threshold)
is over budget. Once it is at or under budget the cost term is switched off (λ = 0) and the
task alone moves the gates, so useful channels can reopen; the stored strength decays a
little, so pressure comes back gently if the structure grows over budget again. On the ResNet
sample a λ that only decayed kept closing gates long after the budget was reached (21 % of
the MACs for a 50 % budget).
"""

import math


class BudgetController:
    def __init__(self, budget: float, strength: float | None = None, initial: float = 0.5,
                 rate: float = 0.1) -> None:
        self.budget = budget
        self.fixed = strength is not None
        self.strength = float(strength) if strength is not None else initial
        self.lam = self.strength
        self.rate = rate

    def update(self, cost_ratio: float) -> float:
        """Feed the current structure's cost / seed cost; get the λ for the next steps."""
        if self.fixed:
            return self.lam
        # The step is proportional to how far off budget we are, capped for stability.
        error = max(-1.0, min(1.0, (cost_ratio - self.budget) / self.budget))
        over = error > 0
        self.strength *= math.exp(self.rate * (error if over else 0.5 * error - 0.05))
        self.strength = min(max(self.strength, 1e-4), 1e4)
        self.lam = self.strength if over else 0.0
        return self.lam

    def state(self) -> dict:
        """What a checkpoint needs to continue steering exactly as before."""
        return {"strength": self.strength, "lam": self.lam}

    def load_state(self, state: dict) -> None:
        self.strength, self.lam = float(state["strength"]), float(state["lam"])
