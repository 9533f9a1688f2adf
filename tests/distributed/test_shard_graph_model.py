"""A model built from ONE shard's graphs (build_shard_graphs) and sharded by
parallelize_model equals the full-graph model sharded the usual way: same halo plans, same
local edges, same output rows (3 in-process ranks, uneven chunk-aligned HR ranges)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hpcds.distributed import ShardContext
from hpcds.grids import make_grid, shard_ranges
from hpcds.models import DownscalerNet
from hpcds.models.parallelize import parallelize_model
from hpcds.models.shard_graphs import build_shard_graphs


def test_model_from_shard_graphs_matches_full(thread_ranks, tmp_path, tiny_model):
    cfg, graphs, ref, (x, cond, forc, c_noise), full = tiny_model
    n = graphs.n_hr
    hr = make_grid(cfg.grid.hr)
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
