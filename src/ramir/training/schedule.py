"""Learning-rate schedule: linear warm-up, then cosine annealing to ``eta_min`` (RAM_SPEC §4-5).

This follows BasicSR's ``CosineAnnealingRestartLR`` (one period) driven by its warm-up rule, which the
reference recipes use. With ``i`` the 0-based index of the optimisation step (BasicSR's
``current_iter - 1``):

* warm-up, while ``i + 1 < warmup``: ``lr = base * (i + 1) / warmup``;
* otherwise the cosine that runs over the *whole* period, warm-up included:
  ``lr = eta_min + (base - eta_min) * (1 + cos(pi * i / iterations)) / 2``.

The rate is a pure function of the step index, so resuming needs no scheduler state beyond the
iteration counter.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, *, base_lr: float, iterations: int, warmup: int = 0, eta_min: float = 0.0) -> float:
    """Learning rate for the 0-based optimisation ``step``."""
    if warmup > 0 and step + 1 < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(max(step, 0), iterations) / iterations
    return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimiser's learning rate for each step; its only state is the step index."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        iterations: int,
        warmup: int,
        eta_min: float,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr, self.iterations, self.warmup, self.eta_min = base_lr, iterations, warmup, eta_min
        self.step_index = 0

    def lr(self, step: int) -> float:
        return lr_at(step, base_lr=self.base_lr, iterations=self.iterations, warmup=self.warmup,
                     eta_min=self.eta_min)

    def apply(self, step: int) -> float:
        """Set the rate for ``step`` on every parameter group and return it."""
        self.step_index = step
        value = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = value
        return value

    def state_dict(self) -> dict[str, float | int]:
        return {"step_index": self.step_index, "base_lr": self.base_lr, "iterations": self.iterations,
                "warmup": self.warmup, "eta_min": self.eta_min}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.step_index = int(state.get("step_index", 0))
