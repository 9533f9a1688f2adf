"""Which cells of a store are the cells of a grid.

hpcds stores keep the grid's SFC order (`cell_order: sfc`); stores written by other tools keep
the native order. Either way the store's coordinates must be those of the configured grid:
anything else is a store on another grid, reported with the fix.
"""

from __future__ import annotations

import numpy as np

from hpcds.errors import DataCheckError
from hpcds.grids import Grid

COORD_TOLERANCE_DEG = 1e-4


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
    dlat = np.abs(store_lat - lat)
    dlon = np.abs((store_lon - lon + 180.0) % 360.0 - 180.0)
    dlon = np.where(np.abs(lat) > 89.999, 0.0, dlon)  # longitude is moot at a pole
    worst = float(max(dlat.max(initial=0.0), dlon.max(initial=0.0)))
    if worst > COORD_TOLERANCE_DEG:
        raise DataCheckError(f"{what} {store.path} is on another grid than {grid.name} "
                             f"(coordinates differ by up to {worst:.3g}°): {fix}")
    return index
