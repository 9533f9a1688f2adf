"""Halo plans for fake ranks: what arrives is what the layer needs; the exchange's backward
is its adjoint; verify() catches inconsistent plans. In-process (threads), no launcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcds.distributed import (HaloPlanError, gather_halo, graph_shard, scatter_halo_grad,
                               window_plan)
from hpcds.distributed.halo import HaloPlan
from hpcds.grids import shard_ranges
from hpcds.nn.graph_attention import graph_attention_reference
from hpcds.nn.window_attention import window_attention_reference



def _random_graph(n_src, n_dst, k, seed=0):
    """Each destination receives from k sources near it (in index order), receivers sorted."""
    rng = np.random.default_rng(seed)
    recv = np.repeat(np.arange(n_dst), k)
    centre = (recv * n_src) // n_dst
    send = np.clip(centre + rng.integers(-6, 7, size=recv.size), 0, n_src - 1)
    return send, recv


def _delivered(plans, r):
    """Global ids that rank r's exchange delivers, simulated from the SENDERS' plans."""
    got = []
    for peer, count in plans[r].left + plans[r].right:
        idx = dict(plans[peer].sends)[r]
        assert idx.numel() == count
        got.append(plans[peer].start + idx.numpy())
    halo = np.concatenate(got) if got else np.zeros(0, np.int64)
    own = np.arange(plans[r].start, plans[r].start + plans[r].n_local)
    nl = plans[r].n_left
    return np.concatenate([halo[:nl], own, halo[nl:]])


@pytest.mark.parametrize("P", [1, 2, 3, 4, 7])
def test_graph_shards_cover_edges_and_deliver_their_sources(P):
    n_src, n_dst = 53, 41
    send, recv = _random_graph(n_src, n_dst, 3)
    src_r, dst_r = shard_ranges(n_src, P), shard_ranges(n_dst, P)
    shards = [graph_shard(send, recv, src_r, dst_r, r) for r in range(P)]
    plans = [s.plan for s in shards]
    assert sum(s.edges.stop - s.edges.start for s in shards) == len(send)
    for r, sh in enumerate(shards):
        ext = _delivered(plans, r)
        assert np.array_equal(ext, sh.plan.ext_global_ids().numpy())
        # local senders point at the right global source, receivers at the own destinations
        assert np.array_equal(ext[sh.senders.numpy()], send[sh.edges])
        assert np.array_equal(sh.receivers.numpy() + sh.dst_start, recv[sh.edges])
        # only sources this shard's edges need arrive, each once
        needed = set(send[sh.edges]) - set(range(*src_r[r]))
        assert sorted(needed) == sorted(ext[sh.plan.n_left + sh.plan.n_local:])
        assert sh.plan.n_left == 0


@pytest.mark.parametrize("n, P, b", [(40, 4, 3), (11, 4, 4), (11, 3, 8), (9, 2, 8), (5, 5, 1)])
def test_window_plans_bring_b_rows_from_each_side_multi_hop(n, P, b):
    ranges = shard_ranges(n, P)
    plans = [window_plan(ranges, r, b) for r in range(P)]
    for r, (a, z) in enumerate(ranges):
        expected = np.arange(max(0, a - b), min(n, z + b))
        assert np.array_equal(_delivered(plans, r), expected)
        assert plans[r].n_left == a - max(0, a - b)
        assert plans[r].rows_sent <= 2 * b
    if min(z - a for a, z in ranges) < b and P > 2:  # the multi-hop case
        assert max(len(p.left) for p in plans) > 1


def test_window_halo_attention_equals_full_sliding_window_attention(thread_ranks):
    torch.manual_seed(0)
    n, P, W = 23, 4, 12  # shards of 6, 6, 6, 5 < W/2 + … : multi-hop at the ends
    q, k, v = torch.randn(3, 2, n, 2, 4).unbind(0)
    full = window_attention_reference(q, k, v, W)
    ranges = shard_ranges(n, P)

    def rank(r, tr):
        plan = window_plan(ranges, r, W // 2)
        a, z = ranges[r]
        kv = gather_halo(torch.cat([k, v], -1)[:, a:z].contiguous(), plan, tr)
        return window_attention_reference(q[:, a:z], kv[..., :4], kv[..., 4:], W, plan.n_left)

    torch.testing.assert_close(torch.cat(thread_ranks(P, rank), 1), full, rtol=0, atol=1e-6)


def test_graph_attention_on_shards_equals_unsharded(thread_ranks):
    torch.manual_seed(1)
    n_src, n_dst, P = 47, 31, 3
    send, recv = _random_graph(n_src, n_dst, 4, seed=3)
    s_t, r_t = torch.from_numpy(send), torch.from_numpy(recv)
    q = torch.randn(2, n_dst, 2, 4)
    kv = torch.randn(2, n_src, 2, 8)
    bias = torch.randn(len(send), 2)
    full = graph_attention_reference(q, kv[..., :4], kv[..., 4:], bias, s_t, r_t, n_dst)
    src_r, dst_r = shard_ranges(n_src, P), shard_ranges(n_dst, P)

    def rank(r, tr):
        sh = graph_shard(send, recv, src_r, dst_r, r)
        a, z = src_r[r]
        ext = gather_halo(kv[:, a:z].contiguous(), sh.plan, tr)
        d0 = sh.dst_start
        return graph_attention_reference(q[:, d0:d0 + sh.n_dst], ext[..., :4], ext[..., 4:],
                                         bias[sh.edges], sh.senders, sh.receivers, sh.n_dst)

    torch.testing.assert_close(torch.cat(thread_ranks(P, rank), 1), full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["graph", "window"])
def test_backward_is_the_adjoint_of_the_exchange(kind, thread_ranks):
    """Σ_r <gather(x)_r, y_r> = Σ_r <x_r, scatter(y)_r> (halo grads returned and summed)."""
    P, n = 4, 37
    ranges = shard_ranges(n, P)
    send, recv = _random_graph(n, 29, 3, seed=5)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, n, 3, generator=gen, dtype=torch.float64)
    plans = [graph_shard(send, recv, ranges, shard_ranges(29, P), r).plan if kind == "graph"
             else window_plan(ranges, r, 5) for r in range(P)]
    ys = [torch.randn(2, p.n_ext, 3, generator=gen, dtype=torch.float64) for p in plans]

    def rank(r, tr):
        a, z = ranges[r]
        fwd = gather_halo(x[:, a:z].contiguous(), plans[r], tr)
        back = scatter_halo_grad(ys[r], plans[r], tr)
        return (fwd * ys[r]).sum(), (x[:, a:z] * back).sum()

    lhs, rhs = zip(*thread_ranks(P, rank))
    assert abs(sum(lhs) - sum(rhs)) < 1e-10 * abs(sum(lhs))
    assert all(p.rows_sent > 0 for p in plans)


def test_verify_accepts_good_plans_and_names_the_mismatch(thread_ranks):
    P, n = 3, 20
    ranges = shard_ranges(n, P)
    thread_ranks(P, lambda r, tr: window_plan(ranges, r, 2).verify(tr))

    def bad(r, tr):
        plan = window_plan(ranges, r, 2)
        if r == 1:  # expects one row fewer from its left neighbour
            plan = HaloPlan(plan.rank, plan.size, plan.start, plan.n_local, plan.sends,
                            ((0, 1),), plan.right, plan.halo_ids[1:])
        plan.verify(tr)

    with pytest.raises(HaloPlanError, match="rank 0 sends 2 rows to rank 1, which expects 1"):
        thread_ranks(P, bad)

    def wrong_rows(r, tr):
        plan = window_plan(ranges, r, 2)
        if r == 0:  # sends the right count but the wrong rows
            plan = HaloPlan(plan.rank, plan.size, plan.start, plan.n_local,
                            tuple((p, i - 1) for p, i in plan.sends), plan.left, plan.right,
                            plan.halo_ids)
        plan.verify(tr)

    with pytest.raises(HaloPlanError, match=r"wrong rows on rank\(s\) \[1\]"):
        thread_ranks(P, wrong_rows)


def test_plan_builders_reject_bad_input():
    with pytest.raises(ValueError, match="contiguous"):
        window_plan([(0, 3), (4, 6)], 0, 1)
    with pytest.raises(ValueError, match="sorted"):
        graph_shard([0, 1], [1, 0], [(0, 2)], [(0, 2)], 0)
    with pytest.raises(ValueError, match="expects 4 rows"):
        gather_halo(torch.zeros(1, 3, 2), window_plan([(0, 4), (4, 8)], 0, 1), None)


def test_parallelized_model_in_threads_matches_and_deep_copies(thread_ranks, tiny_model):
    """parallelize_model on 3 in-process ranks: the output rows equal the unsharded model's,
    and a deep copy of a sharded model (what EMA makes) shares the plans and still works."""
    import copy

    from hpcds.models.parallelize import parallelize_model

    cfg, graphs, ref, (x, cond, forc, c_noise), full = tiny_model
    n = graphs.n_hr

    def rank(r, tr):
        from hpcds.distributed import ShardContext
        net = copy.deepcopy(ref)
        shard = parallelize_model(net, ShardContext(r, 3, None, tr), n_hr=n)
        twin = copy.deepcopy(net)
        assert twin.encoder.halo.plan is net.encoder.halo.plan
        with torch.no_grad():
            outs = [m(x[:, shard.hr], cond[:, shard.hr], forc[:, shard.hr], c_noise)
                    for m in (net, twin)]
        with pytest.raises(RuntimeError, match="already sharded"):
            parallelize_model(net, ShardContext(r, 3, None, tr), n_hr=n)
        return outs

    outs = thread_ranks(3, rank)
    for i in range(2):
        torch.testing.assert_close(torch.cat([o[i] for o in outs], 1), full, rtol=1e-5,
                                   atol=1e-6)
