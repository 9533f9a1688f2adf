"""What model and training code call: verbs over a `ShardContext` (no raw collectives).

    ctx = ShardContext.from_groups(groups, transport="torch")   # or ShardContext.single()
    h_ext = halo_exchange(h, plan, ctx)         (B, n_local, C) → (B, n_ext, C), autograd
                                                (the custom op hpcds::halo_exchange)
    total = all_reduce_sum(partial, ctx)        sum over the model-parallel group, autograd
    all_reduce_replicated_grads(model, ctx)     after backward: Σ over model-parallel ranks
                                                of every replicated parameter's .grad

All are no-ops (identity) for a group of one rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hpcds.distributed import primitives as prim
from hpcds.distributed.autograd import AllReduceSum, HaloRoute, halo_exchange_op
from hpcds.distributed.halo import HaloPlan
from hpcds.distributed.transport import HaloTransport, LocalTransport


@dataclass(frozen=True, eq=False)
class ShardContext:
    """One rank's view of its model-parallel group: `rank` of `size` shards, the torch
    ProcessGroup for reductions (None = the default group), and the halo transport."""

    rank: int = 0
    size: int = 1
    group: object = None
    transport: HaloTransport = field(default_factory=LocalTransport)

    @classmethod
    def single(cls) -> "ShardContext":
        return cls()

    def __deepcopy__(self, memo) -> "ShardContext":
        return self  # groups and communicators are shared, never copied (EMA deep-copies)

    def __post_init__(self):
        if (self.transport.rank, self.transport.size) != (self.rank, self.size):
            raise ValueError(f"transport is rank {self.transport.rank}/{self.transport.size}"
                             f" but the context is rank {self.rank}/{self.size}")


def halo_exchange(x: torch.Tensor, plan: HaloPlan, ctx: ShardContext,
                  route: HaloRoute | None = None) -> torch.Tensor:
    """x (B, n_local, *F) → (B, n_left + n_local + n_right, *F) along `plan`. `route`: the
    plan's registered HaloRoute (a module keeps one; torch.compile needs it to be a stable
    constant); None makes a one-off route (eager callers)."""
    if ctx.size == 1:
        return x
    if route is None:
        route = HaloRoute(plan, ctx.transport)
    elif route.plan is not plan or route.transport is not ctx.transport:
        raise ValueError("halo_exchange: the route holds another plan or transport")
    return halo_exchange_op(x, route)


def all_reduce_sum(x: torch.Tensor, ctx: ShardContext) -> torch.Tensor:
    """Σ over the model-parallel group (backward: identity; see autograd.AllReduceSum).
    Reduce float32 partial sums (cast before calling when x is bf16)."""
    if ctx.size == 1:
        return x
    return AllReduceSum.apply(x, ctx.group)


@torch.no_grad()
def all_reduce_replicated_grads(module: torch.nn.Module, ctx: ShardContext) -> None:
    """Sum every trainable parameter's .grad over the model-parallel group, in place, in one
    all-reduce per dtype. Each shard's gradient is a partial sum over its own nodes, so the
    sum is the gradient of the whole (unsharded) model. A parameter whose .grad is None on
    this rank (no local node used it) takes part with zeros and receives the sum, so every
    rank issues the same reduction."""
    if ctx.size == 1:
        return
    sum_grads(module, ctx.group)


@torch.no_grad()
def sum_grads(module: torch.nn.Module, group=None, scale: float = 1.0) -> None:
    """grad ← scale · Σ_group grad for every trainable parameter, in place (one all-reduce
    per dtype; a missing .grad takes part as zeros). group None = the whole world."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    prim.all_reduce_sum_coalesced_(grads, group)
    if scale != 1.0:
        torch._foreach_mul_(grads, scale)
