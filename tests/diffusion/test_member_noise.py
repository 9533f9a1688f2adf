"""Sharding-invariant counter-based noise: invariance, independence, N(0, 1) moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hpcds.diffusion.noise import batch_noise, make_noise_fn, member_noise

N, V = 50_000, 5


def test_shard_invariance_uneven_splits():
    full = member_noise(42, 3, 7, np.arange(N), V)
    bounds = [0, 1, 17, 12_345, 12_346, 33_333, N]  # uneven, incl. a one-node shard
    for a, b in zip(bounds, bounds[1:]):
        shard = member_noise(42, 3, 7, np.arange(a, b), V)
        assert np.array_equal(shard, full[a:b])
    perm = np.random.default_rng(0).permutation(N)[:1000]  # any order, any subset
    assert np.array_equal(member_noise(42, 3, 7, perm, V), full[perm])


def test_batch_equals_members_and_variables_prefix():
    nodes = np.arange(100, 400)
    batch = batch_noise(1, [0, 5, 2], 4, nodes, V)
    assert batch.shape == (3, 300, V) and batch.dtype == np.float64
    for b, m in enumerate([0, 5, 2]):
        assert np.array_equal(batch[b], member_noise(1, m, 4, nodes, V))
    # a value does not depend on how many variables are asked for
    assert np.array_equal(member_noise(1, 0, 4, nodes, 2), batch[0, :, :2])
    assert np.array_equal(member_noise(1, 0, 4, nodes, 1), batch[0, :, :1])


def test_reproducible_and_step_minus_one():
    a = member_noise(9, 1, -1, np.arange(1000), 3)
    assert np.array_equal(a, member_noise(9, 1, -1, np.arange(1000), 3))
    assert not np.array_equal(a, member_noise(9, 1, 0, np.arange(1000), 3))


def test_moments_and_ks():
    z = member_noise(0, 0, 0, np.arange(N), V).ravel()
    m = z.size
    assert abs(z.mean()) < 5 / math.sqrt(m)
    assert abs(z.var(ddof=1) - 1) < 5 * math.sqrt(2 / m)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / m)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / m)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # each variable column (cos and sin halves of Box–Muller) is N(0, 1) on its own
    cols = member_noise(0, 0, 0, np.arange(N), V)
    for v in range(V):
        assert stats.kstest(cols[:, v], "norm").pvalue > 1e-4


@pytest.mark.parametrize("other", [dict(seed=1), dict(member=1), dict(step=1),
                                   dict(step=-1), dict(member=2**40)])
def test_distinct_streams_uncorrelated(other):
    base = dict(seed=0, member=0, step=0)
    nodes = np.arange(N)
    a = member_noise(**base, node_index=nodes, n_vars=V).ravel()
    b = member_noise(**{**base, **other}, node_index=nodes, n_vars=V).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
    # also no shifted copies: against the other stream one node and one variable along
    assert abs(np.corrcoef(a[V:], b[:-V])[0, 1]) < 5 / math.sqrt(a.size)
    assert abs(np.corrcoef(a[1:], b[:-1])[0, 1]) < 5 / math.sqrt(a.size)


def test_within_stream_neighbours_uncorrelated():
    z = member_noise(5, 0, 0, np.arange(N), V)
    lim = 5 / math.sqrt(N)
    for v in range(V - 1):  # Box–Muller pairs (0, 1), (2, 3) and across pairs
        assert abs(np.corrcoef(z[:, v], z[:, v + 1])[0, 1]) < lim
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 5 / math.sqrt(N * V)
    # squares too: Box–Muller pairs share a radius, which must not correlate their squares
    assert abs(np.corrcoef(z[:, 0] ** 2, z[:, 1] ** 2)[0, 1]) < lim


def test_large_global_indices_and_validation():
    big = np.array([26_306_559, 2**43, 2**44 - 1])
    z = member_noise(0, 0, 0, big, 2)
    assert np.isfinite(z).all()
    with pytest.raises(ValueError):
        member_noise(0, 0, 0, np.array([-1]), 2)
    with pytest.raises(ValueError):
        member_noise(0, 0, 0, np.array([2**44]), 2)
    with pytest.raises(ValueError):
        member_noise(0, 0, 0, np.array([0.5]), 2)


def test_make_noise_fn_torch():
    nodes = np.arange(10, 30)
    fn = make_noise_fn(4, [1, 3], nodes, 3)
    t = fn(2)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == (2, 20, 3)
    assert np.array_equal(t.numpy(), batch_noise(4, [1, 3], 2, nodes, 3))
