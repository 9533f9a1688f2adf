"""Contiguous, balanced shards of an SFC-ordered node set.

Shard s of P over n cells is the range [start_s, stop_s); the first n mod P shards hold one
cell more than the rest, so sizes differ by at most one and the larger ones come first.
"""

from __future__ import annotations

import numpy as np

from hpcds.errors import GridError


def _check(n: int, num_shards: int) -> tuple[int, int]:
    n, num_shards = int(n), int(num_shards)
    if num_shards < 1:
        raise GridError(f"num_shards={num_shards}: need at least one shard")
    if num_shards > n:
        raise GridError(f"cannot split {n} cells into {num_shards} non-empty shards; "
                        f"use at most {n} shards (fewer model-parallel ranks)")
    return n, num_shards


def shard_ranges(n: int, num_shards: int) -> list[tuple[int, int]]:
    """[(start, stop)] of each of `num_shards` contiguous shards covering [0, n)."""
    n, num_shards = _check(n, num_shards)
    size, extra = divmod(n, num_shards)
    stops = np.cumsum([size + 1] * extra + [size] * (num_shards - extra))
    starts = np.concatenate([[0], stops[:-1]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def shard_of(index, n: int, num_shards: int):
    """Shard holding cell `index` (an int, or an int array for many cells at once)."""
    n, num_shards = _check(n, num_shards)
    idx = np.asarray(index, dtype=np.int64)
    if np.any((idx < 0) | (idx >= n)):
        raise GridError(f"cell index out of range [0, {n}): {index!r}")
    size, extra = divmod(n, num_shards)
    boundary = extra * (size + 1)  # cells before it live in the larger shards
    shard = np.where(idx < boundary, idx // (size + 1),
                     extra + (idx - boundary) // size)  # size >= 1: shards <= n
    return int(shard) if shard.ndim == 0 else shard.astype(np.int64)
