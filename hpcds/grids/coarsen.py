"""Coarse-graining a fine grid onto a coarse one: area-weighted means over nearest cells.

Each fine cell belongs to its nearest coarse cell (great-circle nearest = nearest unit
vector); a coarse cell's value is the area-weighted mean of its fine cells. Coarse cells no
fine cell maps to (outside a regional fine grid) are "uncovered": their rows are empty.
Used by the LR/HR alignment check (coarse(HR) ≈ LR) and the synthetic benchmark.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from hpcds.grids.geometry import Grid

_CHUNK = 1 << 18


def nearest_cells(src: Grid, dst_xyz: np.ndarray) -> np.ndarray:
    """(m,) int64 index of the `src` cell nearest to each unit vector of `dst_xyz` (m, 3)."""
    tree = cKDTree(src.unit_vectors())
    out = np.empty(dst_xyz.shape[0], dtype=np.int64)
    for a in range(0, dst_xyz.shape[0], _CHUNK):
        out[a:a + _CHUNK] = tree.query(dst_xyz[a:a + _CHUNK], k=1)[1]
    return out


def coarsening_matrix(fine: Grid, coarse: Grid) -> tuple[sp.csr_matrix, np.ndarray]:
    """Area-weighted averaging from `fine` to `coarse` (both SFC order).

    Returns csr (n_coarse, n_fine) float64 whose covered rows are non-negative and sum to 1,
    and covered (n_coarse,) bool: the coarse cells that received at least one fine cell.
    """
    owner = nearest_cells(coarse, fine.unit_vectors())  # (n_fine,)
    mass = np.bincount(owner, weights=fine.area_weights, minlength=coarse.size)
    covered = mass > 0
    data = fine.area_weights / mass[owner]
    matrix = sp.csr_matrix((data, (owner, np.arange(fine.size))),
                           shape=(coarse.size, fine.size))
    matrix.sort_indices()
    return matrix, covered
