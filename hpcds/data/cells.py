"""Which cells of a store are the cells of a grid.

hpcds stores keep the grid's SFC order (`cell_order: sfc`); stores written by other tools keep
an order of their own: usually the grid's native one (rows north to south, each west to east),
but anemoi-datasets keeps a netCDF source's row order, so latitudes may run south to north.
The native order is tried first (no search); otherwise cells are matched by their coordinates.
Either way the store's coordinates must be those of the configured grid: anything else is a
store on another grid, reported with the fix.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from hpcds.errors import DataCheckError
from hpcds.grids import Grid
from hpcds.grids.geometry import lonlat_to_xyz

COORD_TOLERANCE_DEG = 1e-4


def _mismatch_deg(store_lat, store_lon, lat, lon) -> float:
    """The largest coordinate difference (degrees) between two (n,) sets of cells."""
    dlat = np.abs(store_lat - lat)
    dlon = np.abs((store_lon - lon + 180.0) % 360.0 - 180.0)
    dlon = np.where(np.abs(lat) > 89.999, 0.0, dlon)  # longitude is moot at a pole
    return float(max(dlat.max(initial=0.0), dlon.max(initial=0.0)))


def _match_by_coordinates(store, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, float]:
    """(index (n,) int64 of the nearest store cell to each (lat, lon), worst distance in
    degrees of arc). Reads all the store's coordinates: (n_cells, 3) float64 for the tree."""
    tree = cKDTree(lonlat_to_xyz(store.latitudes, store.longitudes))
    chord, index = tree.query(lonlat_to_xyz(lat, lon), k=1)
    worst = float(np.rad2deg(2.0 * np.arcsin(min(float(np.max(chord, initial=0.0)) / 2, 1.0))))
    return index.astype(np.int64), worst


def store_cells_for_grid(store, grid: Grid, what: str, fix: str,
                         cells: tuple[int, int] | None = None) -> np.ndarray:
    """(b-a,) int64: for the grid's SFC cells [a, b) (all by default) the index of each in
    `store`, after checking the store's size and coordinates against the grid.

    what: names the store in messages ("the HR store"); fix: what to do when it differs."""
    start, stop = (0, grid.size) if cells is None else cells
    if store.n_cells != grid.size:
        raise DataCheckError(f"{what} {store.path} has {store.n_cells} cells but grid "
                             f"{grid.name} has {grid.size}: {fix}")
    native = store.cell_order != "sfc"
    index = grid.native_index[start:stop] if native else np.arange(start, stop)
    lat, lon = grid.latitudes[start:stop], grid.longitudes[start:stop]
    store_lat, store_lon = store.coordinates_at(index if native else slice(start, stop))
    worst = _mismatch_deg(store_lat, store_lon, lat, lon)
    if native and worst > COORD_TOLERANCE_DEG:
        # one-to-one within the tolerance: the grid's cells are far further apart than it
        index, worst = _match_by_coordinates(store, lat, lon)
    if worst > COORD_TOLERANCE_DEG:
        raise DataCheckError(f"{what} {store.path} is on another grid than {grid.name} "
                             f"(coordinates differ by up to {worst:.3g}°): {fix}")
    return index
