"""Activation checkpointing of every block under model parallelism: each block's halo
exchange runs inside the checkpointed region, so the backward's recompute exchanges again.
The autograd graphs are identical on every rank, so the recomputes come in the same order
everywhere; checked here on in-process ranks (P = 2 and 3, uneven HR ranges): the sharded
model with checkpointing equals one process without it — output rows, input gradients and
every parameter gradient (summed over ranks), float32. The torchrun/gloo version of the same
comparison (even ranges, P = 2, 3, 4) is tests/distributed/test_multirank.py."""

from __future__ import annotations

import copy

import pytest
import torch

from hpcds.distributed import ShardContext
from hpcds.models.parallelize import parallelize_model
from hpcds.nn import GraphAttentionBlock

BLOCKS = ("encoder", "processor.0", "processor.1", "decoder", "refiner.0")


def _close(name, got, want, rtol=1e-5, floor=0.0):
    """max |got − want| ≤ rtol · max |want| + floor (float32 sums in another order)."""
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    assert torch.isfinite(got).all() and err <= rtol * scale + floor, (
        f"{name}: max error {err:.3e} vs scale {scale:.3e}")


@pytest.mark.parametrize("P, rows", [(2, 0), (3, 0), (2, 257), (3, 101)])
def test_checkpointed_sharded_equals_single_process(thread_ranks, tiny_model, P, rows):
    """rows > 0: the graph blocks also run their destination rows in checkpointed pieces
    (model.graph_block_rows), inside the checkpointed blocks."""
    cfg, graphs, ref, inputs, _ = tiny_model
    ref = copy.deepcopy(ref)
    assert not ref.activation_checkpointing
    assert [name for name in BLOCKS if name not in dict(ref.named_modules())] == []
    n = graphs.n_hr
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(*inputs[0].shape[:2], ref.n_vars, generator=gen)

    # one process, no checkpointing
    ref.zero_grad(set_to_none=True)
    x_ref = [t.clone().requires_grad_(True) for t in inputs[:3]]
    out_ref = ref(*x_ref, inputs[3])
    (out_ref * w).sum().backward()
    grads = {k: p.grad.clone() for k, p in ref.named_parameters()}
    # gradients that are 0 in exact arithmetic (a constant logit shift cancels in the
    # softmax) are float noise: a floor of 1e-7 × the largest
    floor = 1e-7 * max(g.abs().max().item() for g in grads.values())

    cuts = {2: [(0, n // 3), (n // 3, n)], 3: [(0, 20), (20, n - 30), (n - 30, n)]}[P]
    assert len({b - a for a, b in cuts}) == P  # uneven

    def rank(r, transport):
        ctx = ShardContext(r, P, None, transport)
        net = copy.deepcopy(ref)
        net.zero_grad(set_to_none=True)
        net.activation_checkpointing = True
        for m in net.modules():
            if isinstance(m, GraphAttentionBlock):
                m.rows = rows
        shard = parallelize_model(net, ctx, n_hr=n, hr_ranges=cuts)
        assert shard.ranges["hr"] == cuts[r]
        starts = dict.fromkeys(BLOCKS, 0)
        modules = dict(net.named_modules())
        for name in BLOCKS:
            modules[name].register_forward_pre_hook(
                lambda m, a, name=name: starts.__setitem__(name, starts[name] + 1))
        x = [t[:, shard.hr].clone().requires_grad_(True) for t in inputs[:3]]
        out = net(*x, inputs[3])
        # the local part of the loss; the halo exchanges' adjoints carry the rest
        (out * w[:, shard.hr]).sum().backward()
        return (shard.hr, out.detach(), [t.grad for t in x],
                {k: p.grad for k, p in net.named_parameters()}, starts)

    results = thread_ranks(P, rank)
    for r, (hr, out, x_grads, _, starts) in enumerate(results):
        _close(f"rank {r} output", out, out_ref[:, hr].detach())
        for i, g in enumerate(x_grads):
            _close(f"rank {r} input {i} gradient", g, x_ref[i].grad[:, hr])
        assert starts == dict.fromkeys(BLOCKS, 2), starts  # forward + recompute in backward
    for k, g in grads.items():
        summed = sum(res[3][k] if res[3][k] is not None else torch.zeros_like(g)
                     for res in results)
        _close(f"grad {k}", summed, g, floor=floor)
