"""Sharded == single process, on real ranks (launched by tests/distributed/test_multirank.py):

    torchrun --standalone --nproc_per_node=P sharded_check.py --transport torch
    mpirun -n 3 python -m mpi4py sharded_check.py --transport mpi

Every rank computes the single-process reference itself (same seeds), then the sharded
version over the model-parallel group of all ranks, and compares its own rows:
  1. halo exchange: delivered rows and the gradients returned to their owners (float64);
  2. a window block with shards shorter than W/2 (multi-hop halo) == the full block;
  3. DownscalerNet (encoder, processor, decoder, refiner; B = 2; uneven shards): forward
     output and every parameter gradient (summed over ranks) within 1e-5 relative, float32,
     also with activation checkpointing (the exchange is recomputed in backward).
Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import argparse
import copy

import torch

from hpcds.config.load import load_config
from hpcds.config.schema import ModelConfig, ParallelConfig
from hpcds.distributed import (all_reduce_replicated_grads, all_reduce_sum, halo_exchange,
                               setup_parallel, teardown_parallel, window_plan)
from hpcds.distributed.modules import HaloModule
from hpcds.grids import make_grid, shard_ranges
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.models.parallelize import parallelize_model
from hpcds.nn import WindowAttentionBlock

V, F = 3, 4


def _close(name, got, want, rtol=1e-5, floor=0.0):
    """Relative agreement: max |got − want| ≤ rtol · max |want| + floor, and finite."""
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    if not (torch.isfinite(got).all() and err <= rtol * max(scale, 1e-30) + floor):
        raise AssertionError(f"{name}: max error {err:.3e} vs scale {scale:.3e}")


def _perturb(net, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if torch.all(p == 0):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def check_halo_exchange(ctx):
    P, n, b = ctx.size, 29, 5
    ranges = shard_ranges(n, P)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, n, 3, generator=gen, dtype=torch.float64)
    plans = [window_plan(ranges, r, b) for r in range(P)]
    ws = [torch.randn(2, p.n_ext, 3, generator=gen, dtype=torch.float64) for p in plans]
    x_ref = x.clone().requires_grad_(True)
    sum((x_ref[:, p.ext_global_ids()] * w).sum() for p, w in zip(plans, ws)).backward()
    plan = plans[ctx.rank]
    plan.verify(ctx.transport)
    a, z = ranges[ctx.rank]
    x_loc = x[:, a:z].clone().requires_grad_(True)
    ext = halo_exchange(x_loc, plan, ctx)
    assert torch.equal(ext, x[:, plan.ext_global_ids()]), "halo rows"
    (ext * ws[ctx.rank]).sum().backward()
    _close("halo gradient", x_loc.grad, x_ref.grad[:, a:z], rtol=1e-12)


def check_window_multi_hop(ctx):
    torch.manual_seed(0)
    n, W = 3 * ctx.size - 1, 12  # shards of 2–3 tokens < W/2 = 6
    blk = WindowAttentionBlock(8, 2, 2.0, 8, W)
    _perturb(blk)
    x, emb = torch.randn(2, n, 8), torch.randn(2, 8)
    ref = blk(x, emb)
    ref.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in blk.named_parameters()}
    blk.zero_grad()
    ranges = shard_ranges(n, ctx.size)
    plans = [window_plan(ranges, r, W // 2) for r in range(ctx.size)]
    hops = max(max(len(p.left), len(p.right)) for p in plans)
    assert ctx.size < 3 or hops >= 2, "multi-hop not exercised"
    plan = plans[ctx.rank]
    blk.halo = HaloModule(plan, ctx)
    a, z = ranges[ctx.rank]
    out = blk(x[:, a:z], emb)
    _close("window block output", out, ref[:, a:z])
    all_reduce_sum(out.square().sum(), ctx).backward()
    all_reduce_replicated_grads(blk, ctx)
    for k, p in blk.named_parameters():
        _close(f"window block grad {k}", p.grad, grads[k])


MODEL_OVERRIDES = [
    "grid.hr.name=0.55/0.55", "model.hidden_grid.name=1.2/1.2",  # 253 HR, 55 hidden nodes
    "model.hidden_dim=16", "model.num_heads=2", "model.processor_layers=2",
    "model.window=32", "model.noise_embedding_dim=16"]  # W/2 = 16 > 14: multi-hop at P = 4
if "refiner_knn" in ModelConfig.__dataclass_fields__:
    MODEL_OVERRIDES.append("model.refiner_knn=4")


def check_model(ctx):
    cfg = load_config("tiny", MODEL_OVERRIDES)
    graphs = build_model_graphs(cfg.model, make_grid(cfg.grid.hr))
    torch.manual_seed(0)
    ref = DownscalerNet(cfg.model, V, F, graphs)
    _perturb(ref)
    gen = torch.Generator().manual_seed(7)
    B, N = 2, graphs.n_hr
    inputs = (torch.randn(B, N, V, generator=gen), torch.randn(B, N, V, generator=gen),
              torch.randn(B, N, F, generator=gen), torch.randn(B, generator=gen))
    w = torch.randn(B, N, V, generator=gen)
    out_ref = ref(*inputs)
    (out_ref * w).sum().backward()
    grads = {k: p.grad.clone() for k, p in ref.named_parameters()}
    assert all(g.abs().sum() > 0 for g in grads.values())
    # gradients that are 0 in exact arithmetic (the edge-bias MLP's output bias: a constant
    # logit shift cancels in the softmax) are float noise: a floor of 1e-7 × the largest
    floor = 1e-7 * max(g.abs().max().item() for g in grads.values())

    for checkpointing in (False, True):
        net = copy.deepcopy(ref)
        net.zero_grad(set_to_none=True)
        net.activation_checkpointing = checkpointing
        shard = parallelize_model(net, ctx, n_hr=N)
        hr = shard.hr
        out = net(*(t[:, hr] for t in inputs[:3]), inputs[3])
        _close(f"model output (ckpt={checkpointing})", out, out_ref[:, hr])
        all_reduce_sum((out * w[:, hr]).sum(), ctx).backward()
        all_reduce_replicated_grads(net, ctx)
        for k, p in net.named_parameters():
            _close(f"grad {k} (ckpt={checkpointing})", p.grad, grads[k], floor=floor)
    return shard


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["torch", "mpi"], default="torch")
    args = ap.parse_args()
    torch.set_num_threads(1)
    state = setup_parallel(ParallelConfig(model_parallel=0 or _world(),
                                          halo_transport=args.transport))
    ctx = state.ctx
    check_halo_exchange(ctx)
    check_window_multi_hop(ctx)
    shard = check_model(ctx)
    print(f"OK rank {ctx.rank}/{ctx.size} transport={type(ctx.transport).__name__} "
          f"hr={shard.ranges['hr']} hidden={shard.ranges['hidden']} "
          f"halo rows (sent, received)={shard.halo_rows()}", flush=True)
    teardown_parallel()


def _world() -> int:
    from hpcds.distributed import discover_env
    return discover_env().world_size


if __name__ == "__main__":
    main()
