"""Regular latitude-longitude grids "<dlat>/<dlon>" (degrees), global or on an area.

Global: rows 90 → -90 inclusive (0.25/0.25 has 721 rows, like ECMWF's), columns 0 → 360-dlon.
On an area the points are those of the same global lattice (integer multiples of the steps,
the convention of MARS area extraction) that lie inside the box, so a regional grid is a
sub-grid of the global one and an LR/HR pair on nested steps shares points.
Native order: rows north to south, each west to east; field_shape (nlat, nlon).
"""

from __future__ import annotations

import numpy as np

from hpcds.errors import GridError
from hpcds.grids.regions import Area

_TOL_STEPS = 1e-4  # an edge this fraction of a step short of a point still includes it
# (areas are often copied from float32 files: 23.265 is stored as 23.264999)


def parse_regular_name(name: str) -> tuple[float, float] | None:
    """(dlat, dlon) of a "<dlat>/<dlon>" name, None if `name` has another form."""
    parts = str(name).strip().split("/")
    if len(parts) != 2:
        return None
    try:
        dlat, dlon = (float(p) for p in parts)
    except ValueError:
        return None
    if not (np.isfinite(dlat) and np.isfinite(dlon) and dlat > 0 and dlon > 0):
        raise GridError(f"grid {name!r}: steps must be positive degrees, e.g. 0.25/0.25")
    if dlat > 180 or dlon > 360:
        raise GridError(f"grid {name!r}: steps larger than the sphere; use dlat <= 180 and "
                        "dlon <= 360")
    return dlat, dlon


def _divides(step: float, span: float) -> int | None:
    """span / step if it is (to rounding) an integer, else None."""
    count = span / step
    return int(round(count)) if abs(count - round(count)) < _TOL_STEPS else None


def full_circle_columns(dlon: float, what: str) -> int:
    """Number of columns of a grid going once round the globe at step `dlon`."""
    n = _divides(dlon, 360.0)
    if n is None:
        raise GridError(f"{what}: dlon={dlon:g} does not divide 360, so the columns cannot "
                        "close round the globe; choose a step that divides 360 or an area")
    return n


def lattice(lo: float, hi: float, step: float) -> np.ndarray:
    """The multiples k·step (k integer) in [lo, hi], ascending, float64."""
    k0 = int(np.ceil(lo / step - _TOL_STEPS))
    k1 = int(np.floor(hi / step + _TOL_STEPS))
    return np.arange(k0, k1 + 1, dtype=np.float64) * step


def regular_axes(dlat: float, dlon: float, area: Area | None) -> tuple[np.ndarray, np.ndarray]:
    """Row latitudes (nlat,) north → south and column longitudes (nlon,) west → east, degrees
    (area longitudes as in the box, e.g. negative west of 0°E; reduce mod 360 for storage)."""
    what = f"regular grid {dlat:g}/{dlon:g}"
    if area is None:
        nlat = _divides(dlat, 180.0)
        if nlat is None:
            raise GridError(f"{what}: dlat={dlat:g} does not divide 180, so a global grid "
                            "cannot reach both poles; choose a step that divides 180")
        nlon = full_circle_columns(dlon, what)
        lats = 90.0 - 180.0 * np.arange(nlat + 1) / nlat
        return lats, 360.0 * np.arange(nlon) / nlon
    lats = lattice(area.south, area.north, dlat)[::-1]
    if area.full_circle:
        first = np.ceil(area.west / dlon - _TOL_STEPS) * dlon
        lons = first + np.arange(full_circle_columns(dlon, what)) * dlon
    else:
        lons = lattice(area.west, area.east, dlon)
    if lats.size == 0 or lons.size == 0:
        raise GridError(f"area {area.spec()} contains no point of the {what} lattice "
                        "(multiples of the steps); enlarge the area")
    return lats, lons


def band_weights(lats: np.ndarray, dlat: float) -> np.ndarray:
    """(nlat,) solid angle per unit longitude of the band [lat - dlat/2, lat + dlat/2] around
    each row, clipped at the poles (a pole row gets the half band next to it)."""
    top = np.deg2rad(np.minimum(lats + dlat / 2.0, 90.0))
    bottom = np.deg2rad(np.maximum(lats - dlat / 2.0, -90.0))
    return np.sin(top) - np.sin(bottom)


def rectangular_cells(lats: np.ndarray, lons: np.ndarray, row_weights: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten (nlat,) × (nlon,) axes row-major: lat (n,), lon (n,), weights (n,) summing to
    1 (the row's band shared equally by its columns)."""
    nlat, nlon = lats.size, lons.size
    lat = np.repeat(lats, nlon)
    lon = np.tile(lons, nlat)
    w = np.repeat(row_weights, nlon)
    return lat, lon, w / w.sum()


def regular_coordinates(dlat: float, dlon: float, area: Area | None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Native-order cells: lat (n,), lon (n,) in [0, 360), area weights (n,) summing to 1,
    and field_shape (nlat, nlon)."""
    lats, lons = regular_axes(dlat, dlon, area)
    lat, lon, w = rectangular_cells(lats, lons, band_weights(lats, dlat))
    return lat, lon % 360.0, w, (lats.size, lons.size)
