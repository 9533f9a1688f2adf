"""Exponential moving average of a model's weights (what sampling uses by default).

After each optimizer step, for every floating-point parameter p and its average e:

    e ← d_t · e + (1 − d_t) · p,    d_t = min(decay, (1 + t) / (10 + t))   (warmup=True)
                                     d_t = decay                           (warmup=False)

where t is the number of updates before this one (TensorFlow's `num_updates` warm-up: early
averages are not dominated by the random initial weights). Persistent buffers are copied;
non-persistent ones (the model's graph index tensors: constants, possibly large) are shared
with the model, not duplicated.
"""

from __future__ import annotations

import copy

import torch


def ema_decay_at(t: int, decay: float, warmup: bool = True) -> float:
    return min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        persistent = set(model.state_dict())
        shared = {id(b): b for name, b in model.named_buffers() if name not in persistent}
        self.module = copy.deepcopy(model, memo=shared).eval()
        self.module.requires_grad_(False)
        self._buffers = [name for name, _ in model.named_buffers() if name in persistent]
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = ema_decay_at(self.updates, self.decay, self.warmup)
        ema_p, p = [], []
        for e, m in zip(self.module.parameters(), model.parameters()):
            if e.dtype.is_floating_point:
                ema_p.append(e)
                p.append(m.detach())
            else:
                e.copy_(m)
        if ema_p:
            torch._foreach_lerp_(ema_p, p, 1.0 - d)
        if self._buffers:
            mine, theirs = dict(self.module.named_buffers()), dict(model.named_buffers())
            for name in self._buffers:
                mine[name].copy_(theirs[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates,
                "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
