"""HR forcings: static fields (orography, land-sea mask) and the per-date input features.

The forcings store holds the static fields on the HR grid, one date:

    orog  surface height above sea level, m (ETOPO relief with the ocean at 0 m)
    lsm   land fraction in [0, 1]

`forcing_fields` turns them, with the cells' coordinates and the date, into the network's
forcing channels (n_forcings, n) float32, each O(1) and computed pointwise so that any shard
[a, b) gets exactly the slice of the full-grid features:

    orog                 orography / 1000 m (km: 0 at sea, ~1–5 over mountains). A fixed
                         physical scale, not a data statistic, so no global reduction is needed
                         and every dataset is scaled alike.
    lsm                  land fraction
    sin_lat, cos_lat     of the latitude
    sin_lon, cos_lon     of the longitude
    sin/cos_local_time   of 2π·(UTC hour + lon/15)/24: local *mean* solar time (no equation of
                         time), so at 90°E and 06 UTC it is noon (angle π)
    sin/cos_day_of_year  of 2π·doy/365.25, doy = days (fractional, 0-based) since 1 Jan 00 UTC
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from hpcds.data.cells import store_cells_for_grid
from hpcds.errors import DataCheckError
from hpcds.grids.geometry import Grid

STATIC_VARIABLES = ("orog", "lsm")
STATIC_UNITS = {"orog": "m", "lsm": "1"}
FORCING_NAMES = ("orog", "lsm", "sin_lat", "cos_lat", "sin_lon", "cos_lon",
                 "sin_local_time", "cos_local_time", "sin_day_of_year", "cos_day_of_year")
OROGRAPHY_SCALE_M = 1000.0
DAYS_PER_YEAR = 365.25


def _cell_range(grid: Grid, cells: tuple[int, int] | None) -> tuple[int, int]:
    return (0, grid.size) if cells is None else (int(cells[0]), int(cells[1]))


def utc_hours(date: np.datetime64) -> float:
    """Hours since 00 UTC of the date's day (fractional)."""
    seconds = np.datetime64(date, "s")
    return float((seconds - seconds.astype("datetime64[D]")) / np.timedelta64(1, "h"))


def day_of_year(date: np.datetime64) -> float:
    """Days since 1 January 00 UTC of the date's year (fractional, 0-based)."""
    seconds = np.datetime64(date, "s")
    return float((seconds - seconds.astype("datetime64[Y]")) / np.timedelta64(1, "D"))


def local_solar_time_angle(longitudes: np.ndarray, date: np.datetime64) -> np.ndarray:
    """(n,) radians: 2π·(UTC hour + lon/15)/24 (local mean solar time, noon = π)."""
    return 2.0 * np.pi * (utc_hours(date) + np.asarray(longitudes, np.float64) / 15.0) / 24.0


def forcing_fields(grid: Grid, static: Mapping[str, np.ndarray], date: np.datetime64,
                   cells: tuple[int, int] | None = None) -> tuple[list[str], np.ndarray]:
    """The forcing channels for the cells [a, b) of `grid` (all cells when `cells` is None).

    static: {"orog": (b-a,) m, "lsm": (b-a,) fraction} for those cells
            (see `static_forcings_from_store`).
    Returns (names, values (n_forcings, b-a) float32), names = `FORCING_NAMES`.
    """
    start, stop = _cell_range(grid, cells)
    lat = np.deg2rad(grid.latitudes[start:stop])
    lon = np.deg2rad(grid.longitudes[start:stop])
    for name in STATIC_VARIABLES:
        if np.shape(static[name]) != (stop - start,):
            raise ValueError(f"static field {name!r} has shape {np.shape(static[name])}, "
                             f"expected ({stop - start},) for cells [{start}, {stop})")
    solar = local_solar_time_angle(grid.longitudes[start:stop], date)
    season = 2.0 * np.pi * day_of_year(date) / DAYS_PER_YEAR
    ones = np.ones_like(lat)
    values = np.stack([
        np.asarray(static["orog"], np.float64) / OROGRAPHY_SCALE_M,
        np.asarray(static["lsm"], np.float64),
        np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon),
        np.sin(solar), np.cos(solar),
        np.sin(season) * ones, np.cos(season) * ones,
    ])
    return list(FORCING_NAMES), values.astype(np.float32)


def static_forcings_from_store(store, grid: Grid, cells: tuple[int, int] | None = None
                               ) -> dict[str, np.ndarray]:
    """{"orog", "lsm"}: (b-a,) float64 for the grid's SFC cells [a, b), read from the forcings
    store's first date (static fields do not change)."""
    start, stop = _cell_range(grid, cells)
    missing = [v for v in STATIC_VARIABLES if v not in store.variables]
    if missing:
        raise DataCheckError(f"the forcings store {store.path} lacks {', '.join(missing)} "
                             f"(it has {', '.join(store.variables)})")
    index = store_cells_for_grid(store, grid, "the forcings store",
                                 "regenerate the forcings for grid.hr", cells=(start, stop))
    if store.cell_order == "sfc":
        values = store.read(0, list(STATIC_VARIABLES), cells=slice(start, stop))
    else:
        values = store.read(0, list(STATIC_VARIABLES), cells=index)
    values = np.asarray(values, np.float64)[0, :, 0]  # (time, var, ens, cell) → (var, cell)
    return {name: values[i] for i, name in enumerate(STATIC_VARIABLES)}


def static_fields(terrain, grid: Grid) -> dict[str, np.ndarray]:
    """Static HR fields from real terrain: {"orog": (n,) m ≥ 0, "lsm": (n,) in [0, 1]}."""
    from hpcds.data.terrain import terrain_on_grid

    orography, land = terrain_on_grid(terrain, grid, orography=True)
    return {"orog": orography, "lsm": land}


def write_forcings_store(path, grid: Grid, static: Mapping[str, np.ndarray],
                         date: np.datetime64, *, frequency: str, chunk_cells: int,
                         attrs: dict | None = None, overwrite: bool = False):
    """Write the static fields (float32) as a one-date store at `path`; returns the path."""
    from hpcds.data.store import create_store

    values = np.stack([np.asarray(static[v], np.float64) for v in STATIC_VARIABLES])
    with create_store(path, grid=grid, variables=list(STATIC_VARIABLES),
                      dates=np.array([np.datetime64(date, "s")]), frequency=frequency,
                      units=dict(STATIC_UNITS), chunk_cells=chunk_cells, attrs=attrs,
                      overwrite=overwrite) as writer:
        writer.write(0, values[:, None, :].astype(np.float32))
    return path
