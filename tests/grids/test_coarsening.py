"""Coarsening matrices: nearest-cell area averages, against brute force."""

from __future__ import annotations

import numpy as np

from hpcds.config.schema import GridConfig
from hpcds.grids import coarsening_matrix, grid_from_name, make_grid


def owners_checked(matrix, fine, coarse) -> np.ndarray:
    """The coarse cell each fine cell was given to, checked to be a nearest one by brute
    force (fine cells halfway between two coarse cells may go to either)."""
    csc = matrix.tocsc()
    assert np.all(np.diff(csc.indptr) == 1)  # every fine cell belongs to exactly one
    owner = csc.indices
    dots = fine.unit_vectors() @ coarse.unit_vectors().T
    assert np.all(dots[np.arange(fine.size), owner] >= dots.max(axis=1) - 1e-12)
    return owner


def test_global_coarsening_matches_brute_force():
    fine, coarse = grid_from_name("O48"), grid_from_name("O16")
    matrix, covered = coarsening_matrix(fine, coarse)
    assert matrix.shape == (coarse.size, fine.size) and covered.all()
    owner = owners_checked(matrix, fine, coarse)
    x = np.random.default_rng(0).normal(size=fine.size)
    w = fine.area_weights
    mass = np.bincount(owner, w, coarse.size)
    np.testing.assert_allclose(matrix @ x, np.bincount(owner, w * x, coarse.size) / mass,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(matrix @ np.full(fine.size, -3.5), -3.5, rtol=1e-14)
    # mass: coarse values weighted by the fine area they stand for give the fine mean
    assert abs(mass @ (matrix @ x) - w @ x) < 1e-14
    # and with the coarse grid's own weights, a smooth field's mean is close to the fine one
    z = fine.unit_vectors()[:, 2]
    smooth = 1.0 + z * z
    assert abs(coarse.area_weights @ (matrix @ smooth) - w @ smooth) < 5e-3


def test_regional_fine_grid_covers_only_its_area():
    fine = grid_from_name("0.25/0.25", "alps")
    coarse = make_grid(GridConfig(name="1.0/1.0", area="alps", margin_deg=3.0))
    matrix, covered = coarsening_matrix(fine, coarse)
    owner = owners_checked(matrix, fine, coarse)
    np.testing.assert_array_equal(np.flatnonzero(covered), np.unique(owner))
    rows = np.diff(matrix.indptr)
    assert np.all(rows[~covered] == 0) and np.all(rows[covered] > 0)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    np.testing.assert_allclose(sums[covered], 1.0, rtol=1e-14)
    # covered coarse cells are exactly those on the alps box (the fine grid's extent)
    lat, lon = coarse.latitudes, coarse.longitudes
    inside = (lat >= 43) & (lat <= 49) & (lon >= 4) & (lon <= 17)
    np.testing.assert_array_equal(covered, inside)
