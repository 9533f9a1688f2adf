"""The space-filling curve: a valid Hilbert curve, continuous across cube faces, and local
on real grids (consecutive cells are neighbours; contiguous shards are compact patches)."""

from __future__ import annotations

import numpy as np

from hpcds.grids import grid_from_name, shard_ranges, sfc_keys, sfc_order
from hpcds.grids.sfc import ORDER, hilbert_index


def arcs(xyz: np.ndarray) -> np.ndarray:
    """Great-circle distance between consecutive unit vectors."""
    return np.arccos(np.clip(np.sum(xyz[1:] * xyz[:-1], axis=1), -1.0, 1.0))


def test_hilbert_index_is_a_path_through_every_cell():
    order = 5
    side = 1 << order
    x, y = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    d = hilbert_index(x, y, order)
    np.testing.assert_array_equal(np.sort(d), np.arange(side * side))
    path = np.argsort(d)
    steps = np.abs(np.diff(x[path])) + np.abs(np.diff(y[path]))
    assert np.all(steps == 1)  # each step moves to an edge neighbour
    assert (x[path[0]], y[path[0]], x[path[-1]], y[path[-1]]) == (0, 0, side - 1, 0)


def test_curve_is_continuous_across_cube_faces():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(400_000, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    keys = sfc_keys(xyz)
    order = np.argsort(keys)
    face = (keys[order] >> np.uint64(2 * ORDER)).astype(np.int64)
    assert set(face) == set(range(6))
    jumps = arcs(xyz[order])
    changes = np.flatnonzero(np.diff(face))  # last point of a face → first of the next
    assert changes.size == 5
    # the curve leaves each face at the corner where the next one starts
    assert np.all(jumps[changes] < 10 * np.median(jumps))


def test_sfc_order_is_a_stable_permutation():
    grid = grid_from_name("2.0/2.0")
    lat = grid.to_native(grid.latitudes)
    lon = grid.to_native(grid.longitudes)
    perm = sfc_order(lat, lon)
    np.testing.assert_array_equal(np.sort(perm), np.arange(lat.size))
    # the 180 points of the north pole row share one key: they keep their native order
    pole = perm[lat[perm] == 90.0]
    np.testing.assert_array_equal(pole, np.arange(180))


def test_consecutive_cells_are_neighbours():
    grid = grid_from_name("O96")
    spacing = np.pi / 192  # distance between Gaussian rings
    steps = arcs(grid.unit_vectors())
    assert np.median(steps) < 1.5 * spacing
    assert np.percentile(steps, 99) < 3.0 * spacing
    shuffled = grid.unit_vectors()[np.random.default_rng(0).permutation(grid.size)]
    assert np.median(arcs(shuffled)) > 30 * spacing


def test_shards_are_compact_patches():
    grid = grid_from_name("O96")
    xyz = grid.unit_vectors()
    shuffled = xyz[np.random.default_rng(0).permutation(grid.size)]

    def max_radius(points, shards):
        radii = []
        for a, b in shard_ranges(len(points), shards):
            centre = points[a:b].mean(axis=0)
            centre /= np.linalg.norm(centre)
            radii.append(np.arccos(np.clip(points[a:b] @ centre, -1, 1)).max())
        return max(radii)

    for shards in (16, 64):
        cap = np.arccos(1 - 2 / shards)  # radius of a cap of 1/shards of the sphere
        assert max_radius(xyz, shards) < 2.5 * cap
        assert max_radius(shuffled, shards) > 5 * cap
