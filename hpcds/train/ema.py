"""Exponential moving average of a model's weights (what sampling uses by default).

After each optimizer step, for every floating-point parameter p and its average e:

    e ← d_t · e + (1 − d_t) · p,    d_t = min(decay, (1 + t) / (10 + t))   (warmup=True)
                                     d_t = decay                           (warmup=False)

where t is the number of updates before this one (TensorFlow's `num_updates` warm-up: early
averages are not dominated by the random initial weights). Persistent buffers are copied;
non-persistent ones (the model's graph index tensors: constants, possibly large) are shared
with the model, not duplicated.

The average is float32 whatever the model's parameters are, and p is the float32 MASTER
weight (hpcds/train/master.py), not the module's compute copy: under DeepSpeed bf16 the
module holds bf16 copies, and at d = 0.999 an update (1 − d)·(p − e) is far below bf16's
resolution (2⁻⁸ relative), so a bf16 average would not move at all. Where the masters are
partitioned over data-parallel ranks (ZeRO), each rank updates the average of its own slice
only — elementwise, so the numbers are those of one process — and `sync()` (collective)
assembles the whole before the average is read (`module` for validation, `state_dict`).
"""

from __future__ import annotations

import copy

import torch

from hpcds.train.master import assemble, local_masters, partitioned


def ema_decay_at(t: int, decay: float, warmup: bool = True) -> float:
    return min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        persistent = set(model.state_dict())
        memo = {id(b): b for name, b in model.named_buffers() if name not in persistent}
        # fresh float32 parameters (also under bf16: see above), without the attributes
        # DeepSpeed hangs on the model's (links to its optimizer, which deepcopy would copy)
        for p in model.parameters():
            dtype = torch.float32 if p.dtype.is_floating_point else p.dtype
            memo[id(p)] = torch.nn.Parameter(
                p.detach().to(dtype, copy=True).contiguous(), requires_grad=False)
        self.module = copy.deepcopy(model, memo=memo).eval()
        self._buffers = [name for name, _ in model.named_buffers() if name in persistent]
        self.updates = 0
        self._source, self._stale = model, partitioned(model)
        with torch.no_grad():  # e ← the float32 masters, not the (bf16) compute copies
            ema = list(self.module.parameters())
            for s in local_masters(model):
                ema[s.index].view(-1)[s.start:s.start + s.values.numel()] = s.values

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = ema_decay_at(self.updates, self.decay, self.warmup)
        ema = list(self.module.parameters())
        for e, m in zip(ema, model.parameters()):
            if not e.dtype.is_floating_point:
                e.copy_(m)
        # this rank's slices: (n,) float32 views of the average and of the masters
        mine, masters = [], []
        for s in local_masters(model):
            mine.append(ema[s.index].view(-1).narrow(0, s.start, s.values.numel()))
            masters.append(s.values.float())
        if mine:
            torch._foreach_lerp_(mine, masters, 1.0 - d)
        if self._buffers:
            ours, theirs = dict(self.module.named_buffers()), dict(model.named_buffers())
            for name in self._buffers:
                ours[name].copy_(theirs[name])
        self._source, self._stale = model, self._stale or partitioned(model)
        self.updates += 1

    def sync(self) -> None:
        """Collective when the masters are partitioned (every rank calls it): the whole
        average on every rank. Cheap no-op otherwise."""
        if self._stale:
            assemble(self._source, list(self.module.parameters()))
            self._stale = False

    def state_dict(self) -> dict:
        if self._stale:
            raise RuntimeError("EMA.state_dict() of a partitioned average: call sync() on "
                               "every rank first")
        return {"module": self.module.state_dict(), "updates": self.updates,
                "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self._stale = False

