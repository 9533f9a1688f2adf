"""Learning rate: linear warm-up to `lr` over `warmup_steps`, then cosine decay to `lr_min`.

    lr(s) = lr · (s + 1) / warmup_steps                                   s < warmup_steps
    lr(s) = lr_min + (lr − lr_min) · ½ (1 + cos(π · min(1, (s − W) / (steps − W))))   otherwise

for the optimizer step s = 0, 1, … (0-based: the first step already has a non-zero rate, and
lr(steps) = lr_min; training past `steps` stays at lr_min). The schedule's whole state is the
step, so it is checkpointed as one integer.
"""

from __future__ import annotations

import math

import torch

from hpcds.config.schema import TrainingConfig


def lr_at(step: int, lr: float, lr_min: float, warmup_steps: int, steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimizer's rate for the coming step; `step()` after each optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainingConfig):
        self.optimizer = optimizer
        self.lr, self.lr_min = cfg.lr, cfg.lr_min
        self.warmup_steps, self.steps = cfg.warmup_steps, cfg.steps
        self.last_step = 0
        self._apply()

    def current(self) -> float:
        return lr_at(self.last_step, self.lr, self.lr_min, self.warmup_steps, self.steps)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.current()

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["step"])
        self._apply()
