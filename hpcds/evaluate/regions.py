"""Verification regions: boolean masks over a grid's cells (SFC order).

Global grids get "global", "n_extratropics" (lat ≥ 20°N), "tropics" (|lat| < 20°) and
"s_extratropics" (lat ≤ 20°S) — the three bands partition the sphere. Limited-area grids get
"domain" (all cells). With an orography field (metres, per cell), either kind also gets
"terrain>{threshold}m" (e.g. "terrain>1500m"): cells whose surface height exceeds the
threshold. Regions without any cell are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcds.grids.geometry import Grid

TROPICS_EDGE_DEG = 20.0


@dataclass(frozen=True, eq=False)
class Region:
    """A named set of cells: ``mask`` is (N,) bool over the grid's cells (SFC order)."""

    name: str
    mask: np.ndarray

    @property
    def size(self) -> int:
        return int(np.count_nonzero(self.mask))

    def weights(self, area_weights: np.ndarray) -> np.ndarray:
        """(N,) area weights restricted to the region (zero outside)."""
        return np.where(self.mask, np.asarray(area_weights, dtype=np.float64), 0.0)


def terrain_region_name(threshold_m: float) -> str:
    return f"terrain>{threshold_m:g}m"


def regions_for_grid(grid: Grid, orography_m: np.ndarray | None = None,
                     terrain_mask_m: float = 1500.0) -> list[Region]:
    """The standard verification regions of ``grid`` (see the module docstring).

    orography_m: optional (N,) surface height in metres, in the grid's SFC order.
    terrain_mask_m: the threshold of the terrain region (strictly above).
    """
    n = grid.size
    lat = np.asarray(grid.latitudes, dtype=np.float64)
    regions: list[Region] = []
    if grid.is_global:
        regions += [
            Region("global", np.ones(n, dtype=bool)),
            Region("n_extratropics", lat >= TROPICS_EDGE_DEG),
            Region("tropics", np.abs(lat) < TROPICS_EDGE_DEG),
            Region("s_extratropics", lat <= -TROPICS_EDGE_DEG),
        ]
    else:
        regions.append(Region("domain", np.ones(n, dtype=bool)))
    if orography_m is not None:
        oro = np.asarray(orography_m, dtype=np.float64)
        if oro.shape != (n,):
            raise ValueError(f"orography has shape {oro.shape}, grid {grid.name} has {n} cells")
        regions.append(Region(terrain_region_name(terrain_mask_m), oro > terrain_mask_m))
    return [r for r in regions if r.size > 0]
