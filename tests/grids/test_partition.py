"""Contiguous balanced shards."""

from __future__ import annotations

import numpy as np
import pytest

from hpcds.errors import GridError
from hpcds.grids import shard_of, shard_ranges


@pytest.mark.parametrize("n, shards", [(10, 1), (10, 3), (10, 10), (421_120, 7),
                                       (26_306_560, 64), (1001, 1000)])
def test_ranges_cover_contiguously_and_balance(n, shards):
    ranges = shard_ranges(n, shards)
    assert len(ranges) == shards
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)  # larger shards first
    assert sum(sizes) == n


def test_uneven_example():
    assert shard_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]


@pytest.mark.parametrize("n, shards", [(10, 4), (97, 7), (12, 12), (5, 1)])
def test_shard_of_agrees_with_ranges(n, shards):
    expected = np.concatenate([np.full(b - a, s) for s, (a, b)
                               in enumerate(shard_ranges(n, shards))])
    np.testing.assert_array_equal(shard_of(np.arange(n), n, shards), expected)
    assert shard_of(n - 1, n, shards) == shards - 1
    assert isinstance(shard_of(0, n, shards), int)


def test_bad_shard_counts():
    with pytest.raises(GridError, match="at least one"):
        shard_ranges(10, 0)
    with pytest.raises(GridError, match="at most 10"):
        shard_ranges(10, 11)
    with pytest.raises(GridError, match="out of range"):
        shard_of(10, 10, 2)
