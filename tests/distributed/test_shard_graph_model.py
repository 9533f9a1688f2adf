"""A model built from ONE shard's graphs (build_shard_graphs) and sharded by
parallelize_model equals the full-graph model sharded the usual way: same halo plans, same
local edges, same output rows (3 in-process ranks, uneven chunk-aligned HR ranges)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hpcds.config.load import load_config
from hpcds.distributed import ShardContext
from hpcds.grids import make_grid, shard_ranges
from hpcds.models import DownscalerNet, build_model_graphs
from hpcds.models.parallelize import parallelize_model
from hpcds.models.shard_graphs import build_shard_graphs


def test_model_from_shard_graphs_matches_full(thread_ranks, tmp_path):
    cfg = load_config("tiny", ["grid.hr.name=1.0/1.0", "model.hidden_grid.name=1.5/1.5",
                               "model.hidden_dim=8", "model.num_heads=2", "model.window=8",
                               "model.noise_embedding_dim=8"])
    hr = make_grid(cfg.grid.hr)
    graphs = build_model_graphs(cfg.model, hr)
    torch.manual_seed(0)
    ref = DownscalerNet(cfg.model, 2, 1, graphs)
    with torch.no_grad():
        for p in ref.parameters():
            if torch.all(p == 0):
                p.add_(0.05 * torch.randn(p.shape))
    gen = torch.Generator().manual_seed(1)
    n = graphs.n_hr
    x, cond, forc = (torch.randn(2, n, c, generator=gen) for c in (2, 2, 1))
    c_noise = torch.randn(2, generator=gen)
    with torch.no_grad():
        full = ref(x, cond, forc, c_noise)
    hr_ranges = [(0, 20), (20, n - 30), (n - 30, n)]  # uneven
    hidden_ranges = shard_ranges(graphs.n_hidden, 3)

    def rank(r, tr):
        ctx = ShardContext(r, 3, None, tr)
        sliced = copy.deepcopy(ref)
        want = parallelize_model(sliced, ctx, n_hr=n, hr_ranges=hr_ranges)

        def reduce_max(local):
            return np.max(tr.all_gather_object(local), axis=0)

        part = build_shard_graphs(cfg.model, hr, hr_ranges[r], hidden_ranges[r], tmp_path,
                                  reduce_max=reduce_max)
        net = DownscalerNet(cfg.model, 2, 1, part)
        net.load_state_dict(ref.state_dict())
        with pytest.raises(RuntimeError, match="parallelize_model"):
            net(x[:, :20], cond[:, :20], forc[:, :20], c_noise)
        with pytest.raises(ValueError, match="build the graphs for these ranges"):
            parallelize_model(copy.deepcopy(net), ctx, n_hr=n)  # default (even) ranges
        shard = parallelize_model(net, ctx, n_hr=n, hr_ranges=hr_ranges)
        assert shard.ranges == want.ranges
        for key, plan in want.plans.items():
            got = shard.plans[key]
            assert torch.equal(got.halo_ids, plan.halo_ids) and got.left == plan.left
            assert [(p, i.tolist()) for p, i in got.sends] == [
                (p, i.tolist()) for p, i in plan.sends]
        for name, buf in sliced.named_buffers():
            assert torch.equal(dict(net.named_buffers())[name], buf), name
        with torch.no_grad():
            return net(x[:, shard.hr], cond[:, shard.hr], forc[:, shard.hr], c_noise)

    outs = thread_ranks(3, rank)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-6)
