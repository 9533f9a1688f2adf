"""Autograd Functions over the raw exchanges (halo.py) and collectives (primitives.py).

HaloExchange   forward: own rows → [left halo | own | right halo] (the peers' rows);
               backward: the halo rows' gradients travel back to their owners, which
               index_add them into the rows they sent (a row can be sent to several peers).
AllReduceSum   forward: sum over the group; backward: identity. This is the rule for a
               value reduced from per-shard partial sums (a loss, a normalisation
               statistic) that every rank then uses identically: each rank's share of the
               gradient is dL/dy itself, and the replicated weights' gradients become the
               single-process gradient once summed over the group (see verbs.py).
"""

from __future__ import annotations

import torch

from hpcds.distributed import primitives as prim
from hpcds.distributed.halo import HaloPlan, gather_halo, scatter_halo_grad


class HaloExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: HaloPlan, transport) -> torch.Tensor:
        ctx.plan, ctx.transport = plan, transport
        return gather_halo(x, plan, transport)

    @staticmethod
    def backward(ctx, grad_ext: torch.Tensor):
        return scatter_halo_grad(grad_ext.contiguous(), ctx.plan, ctx.transport), None, None


class AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        return prim.all_reduce_sum_(x.clone(), group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None
