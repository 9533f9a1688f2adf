"""The module that `parallelize.py` swaps into a block's `halo` slot.

    HaloModule(plan, ctx)(h (B, n_local, C)) → (h_ext (B, n_ext, C), n_left)

The same interface as hpcds.nn.blocks.NoHalo. The plan's index tensors follow the module
across devices (`model.to(device)`). The module keeps the plan's `HaloRoute` (the key the
custom op hpcds::halo_exchange looks the plan up by; a constant under torch.compile), made
again whenever the plan is (a device move).
"""

from __future__ import annotations

import torch
from torch import nn

from hpcds.distributed.autograd import HaloRoute
from hpcds.distributed.halo import HaloPlan
from hpcds.distributed.verbs import ShardContext, halo_exchange


class HaloModule(nn.Module):
    def __init__(self, plan: HaloPlan, ctx: ShardContext):
        super().__init__()
        if (plan.rank, plan.size) != (ctx.rank, ctx.size):
            raise ValueError(f"plan of rank {plan.rank}/{plan.size} in context "
                             f"{ctx.rank}/{ctx.size}")
        self.plan, self.ctx = plan, ctx
        self.route = HaloRoute(plan, ctx.transport)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, int]:
        return halo_exchange(h, self.plan, self.ctx, self.route), self.plan.n_left

    def _apply(self, fn, recurse=True):
        self.plan = self.plan.map_tensors(fn)  # index tensors: device moves only (int64)
        self.route = HaloRoute(self.plan, self.ctx.transport)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        p = self.plan
        return (f"rank={p.rank}/{p.size}, n_local={p.n_local}, left={p.n_left}, "
                f"right={p.n_right}, sent={p.rows_sent}")
