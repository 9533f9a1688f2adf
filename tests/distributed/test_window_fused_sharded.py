"""The fused window attention under model parallelism (in-process ranks, threads): a shard
calls it with the halo contract (keys = [left halo | own rows | right halo], kv_offset = the
left halo). Sharded P = 2 and 3 with uneven shards — one shorter than W/2, so its neighbours'
halos span two shards (multi-hop) — equals one process with the fused backend: outputs, input
gradients and every parameter gradient (summed over ranks); and one process fused equals one
process with the reference (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from shard_asserts import assert_shards_equal_one_process

from hpcds.distributed import HaloModule, ShardContext, window_plan
from hpcds.models.parallelize import parallelize_model
from hpcds.nn import WindowAttentionBlock, get_op, window_attention_fused

W = 8
RANGES = {2: [(0, 9), (9, 40)], 3: [(0, 17), (17, 20), (20, 40)]}  # uneven; 3 rows < W/2


def _block_run(block, x, emb, w):
    """Output and gradients (input, parameters) of a block on rows x."""
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = block(x, emb)
    (out * w).sum().backward()
    return out.detach(), x.grad, {k: p.grad for k, p in block.named_parameters()}


@pytest.fixture(scope="module")
def window_block():
    """A float64 WindowAttentionBlock (fused backend) with perturbed zero-init weights, inputs
    x (B = 2, N = 40, C = 8), emb, an output weighting w."""
    torch.manual_seed(0)
    block = WindowAttentionBlock(8, 2, 2.0, 8, window=W, backend="native").double()
    assert block.attention_op is window_attention_fused
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.2 * torch.randn(p.shape, dtype=p.dtype))
    gen = torch.Generator().manual_seed(1)
    x, w = (torch.randn(2, 40, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    emb = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    return block, x, emb, w


def test_fused_block_equals_reference_block(window_block):
    block, x, emb, w = window_block
    ref = copy.deepcopy(block)
    ref.attention_op = get_op("window_attention", "reference")
    out, gx, grads = _block_run(block, x, emb, w)
    ref_out, ref_gx, ref_grads = _block_run(ref, x, emb, w)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-9, atol=1e-11)
    for k, g in grads.items():
        torch.testing.assert_close(g, ref_grads[k], rtol=1e-9, atol=1e-11, msg=k)


@pytest.mark.parametrize("P", [2, 3])
def test_sharded_fused_block_equals_one_process(thread_ranks, window_block, P):
    block, x, emb, w = window_block
    out, gx, grads = _block_run(copy.deepcopy(block), x, emb, w)
    ranges = RANGES[P]

    def rank(r, transport):
        a, z = ranges[r]
        shard = copy.deepcopy(block)
        shard.halo = HaloModule(window_plan(ranges, r, W // 2), ShardContext(r, P, None, transport))
        # the local part of the loss; the halo exchange's adjoint carries the rest
        return _block_run(shard, x[:, a:z], emb, w[:, a:z])

    assert_shards_equal_one_process(thread_ranks(P, rank), out, gx, grads)


def _fused_windows(net):
    """net with every window block on the fused op (the graph blocks keep their backend)."""
    blocks = [m for m in net.modules() if isinstance(m, WindowAttentionBlock)]
    assert blocks
    for m in blocks:
        m.attention_op = window_attention_fused
    return net


@pytest.mark.parametrize("P", [2, 3])
def test_sharded_model_with_fused_windows_equals_one_process(thread_ranks, tiny_model, P):
    """DownscalerNet (tiny, float32) with fused window blocks, sharded over uneven HR ranges:
    output rows, input gradients and parameter gradients as one process."""
    cfg, graphs, ref, inputs, _ = tiny_model
    net = _fused_windows(copy.deepcopy(ref))
    n = graphs.n_hr
    w = torch.randn(*inputs[0].shape[:2], ref.n_vars, generator=torch.Generator().manual_seed(5))
    net.zero_grad(set_to_none=True)
    x_ref = [t.clone().requires_grad_(True) for t in inputs[:3]]
    out_ref = net(*x_ref, inputs[3])
    (out_ref * w).sum().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    scale = max(g.abs().max().item() for g in grads.values())
    cuts = {2: [(0, n // 3), (n // 3, n)], 3: [(0, 20), (20, n - 30), (n - 30, n)]}[P]

    def rank(r, transport):
        shard_net = _fused_windows(copy.deepcopy(ref))
        shard_net.zero_grad(set_to_none=True)
        shard = parallelize_model(shard_net, ShardContext(r, P, None, transport), n_hr=n,
                                  hr_ranges=cuts)
        x = [t[:, shard.hr].clone().requires_grad_(True) for t in inputs[:3]]
        out = shard_net(*x, inputs[3])
        (out * w[:, shard.hr]).sum().backward()
        return (shard.hr, out.detach(), [t.grad for t in x],
                {k: p.grad for k, p in shard_net.named_parameters()})

    results = thread_ranks(P, rank)
    for hr, out, x_grads, _ in results:
        torch.testing.assert_close(out, out_ref[:, hr].detach(), rtol=1e-5, atol=1e-6)
        for g, leaf in zip(x_grads, x_ref):
            torch.testing.assert_close(g, leaf.grad[:, hr], rtol=1e-5, atol=1e-6)
    for k, g in grads.items():
        summed = sum(res[3][k] if res[3][k] is not None else torch.zeros_like(g)
                     for res in results)
        # float32 sums in another order; gradients that are 0 in exact arithmetic are noise
        torch.testing.assert_close(summed, g, rtol=1e-4, atol=1e-6 * scale, msg=k)
