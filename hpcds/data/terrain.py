"""Real terrain on any grid, from ETOPO5 (Debian package ``ferret-datasets``).

``/usr/share/ferret-vis/data/etopo5.cdf`` holds ETOPO5 (5 arc-minutes, 2161 × 4320, variable
``ROSE`` in metres, south to north); the same directory holds a coarser pyramid
(``etopo20/40/60/120.cdf``, 20'…2°, longitudes 20..380). For a grid we pick the coarsest level
that is still at least as fine as the grid (a cheap anti-aliasing: interpolating 5' data onto a
1° grid would sample single peaks) and interpolate bilinearly, wrapping longitudes.

ETOPO5 is *relief*: it includes bathymetry, so the ocean is negative. Two conventions follow:

- land-sea mask: land is ``elevation > 0`` on the source level; the 0/1 indicator is
  interpolated with the same bilinear weights, which gives a land *fraction* in [0, 1] that is
  fractional along coasts. Land below sea level (Caspian, Dead Sea) counts as sea.
- orography (``orography=True``): the surface height the atmosphere sees, ``max(elevation, 0)``
  taken on the source level *before* interpolating, so coasts next to deep water keep their
  land height instead of being dragged below zero.

There is no fallback: a missing file is a ``UserError`` naming the package to install.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial import cKDTree

from hpcds.errors import UserError
from hpcds.grids.geometry import Grid

TERRAIN_VARIABLE = "ROSE"
INSTALL_HINT = ("install it with `apt-get install --no-install-recommends ferret-datasets` "
                "(or set benchmark.terrain_file)")
PYRAMID = ("etopo5", "etopo20", "etopo40", "etopo60", "etopo120")  # finest first
_QUERY_CHUNK = 1 << 20  # interpolate at most this many points at once (bounds memory)


@dataclass(frozen=True)
class TerrainLevel:
    """One level of the pyramid (metadata only; values are read per latitude band).

    path:        the netCDF file
    latitudes:   (ny,) float64, ascending, degrees north
    longitudes:  (nx,) float64, ascending in [0, 360), duplicates of the wrap column removed
    columns:     (nx,) int64, the file's column for each entry of ``longitudes``
    spacing_deg: median latitude spacing
    """

    path: Path
    latitudes: np.ndarray
    longitudes: np.ndarray
    columns: np.ndarray
    spacing_deg: float


@dataclass(frozen=True)
class Terrain:
    """ETOPO relief: ``levels`` from finest to coarsest; ``source`` is the file asked for."""

    source: Path
    levels: tuple[TerrainLevel, ...]


def _open_level(path: Path) -> TerrainLevel:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        if TERRAIN_VARIABLE not in ds.variables:
            raise UserError(f"terrain file {path} has no variable {TERRAIN_VARIABLE!r}: "
                            f"expected ETOPO relief; {INSTALL_HINT}")
        ydim, xdim = ds.variables[TERRAIN_VARIABLE].dimensions
        lat = np.asarray(ds.variables[ydim][:], dtype=np.float64)
        lon = np.asarray(ds.variables[xdim][:], dtype=np.float64)
    if np.any(np.diff(lat) <= 0):
        raise UserError(f"terrain file {path}: latitudes are not ascending")
    spacing = float(np.median(np.diff(lat)))
    wrapped = lon % 360.0
    order = np.argsort(wrapped, kind="stable")
    wrapped = wrapped[order]
    # etopo20 repeats its first column 360° later (20.17 and 380.17): drop near-duplicates
    keep = np.concatenate([[True], np.diff(wrapped) > 0.01 * spacing])
    if wrapped[-1] - 360.0 > wrapped[0] - 0.01 * spacing:
        keep[-1] = False
    return TerrainLevel(path, lat, wrapped[keep], order[keep].astype(np.int64), spacing)


def load_terrain(path: str | Path) -> Terrain:
    """Open ETOPO relief at `path` and the coarser pyramid levels beside it (if present).

    Only coordinates are read here; values are read per grid, one latitude band at a time.
    Raises ``UserError`` (with the install command) when `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ETOPO5 terrain not found at {path}: {INSTALL_HINT}")
    paths = [path]
    if re.fullmatch(r"etopo\d+\.cdf", path.name):
        paths += [path.with_name(f"{name}.cdf") for name in PYRAMID
                  if path.with_name(f"{name}.cdf") != path
                  and path.with_name(f"{name}.cdf").is_file()]
    levels = sorted((_open_level(p) for p in paths), key=lambda lvl: lvl.spacing_deg)
    return Terrain(path, tuple(levels))


def grid_spacing_deg(grid: Grid, max_queries: int = 20_000) -> float:
    """Typical spacing of `grid` in degrees of arc: the median over cells of the mean distance
    to the 4 nearest neighbours (for a rectangular dx × dy lattice that is (dx + dy) / 2).
    At most `max_queries` cells (an even stride) are queried."""
    xyz = grid.unit_vectors()
    if grid.size < 2:
        raise UserError(f"grid {grid.name} has {grid.size} cell(s): no spacing")
    k = min(5, grid.size)
    queries = xyz[:: max(1, grid.size // max_queries)]
    chord, _ = cKDTree(xyz).query(queries, k=k)
    angle = 2.0 * np.arcsin(np.clip(chord[:, 1:] / 2.0, 0.0, 1.0))
    return float(np.rad2deg(np.median(angle.mean(axis=1))))


def select_level(terrain: Terrain, spacing_deg: float) -> TerrainLevel:
    """The coarsest level not coarser than `spacing_deg` (the finest if all are coarser)."""
    fitting = [lvl for lvl in terrain.levels if lvl.spacing_deg <= spacing_deg * (1 + 1e-6)]
    return fitting[-1] if fitting else terrain.levels[0]


def _read_band(level: TerrainLevel, lat_min: float, lat_max: float) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Rows of `level` covering [lat_min, lat_max] (plus one row each side):
    (lat (nb,), values (nb, nx) float64, columns ascending in longitude)."""
    import netCDF4

    i0 = max(int(np.searchsorted(level.latitudes, lat_min, side="right")) - 2, 0)
    i1 = min(int(np.searchsorted(level.latitudes, lat_max, side="left")) + 2,
             level.latitudes.size)
    with netCDF4.Dataset(level.path) as ds:
        raw = ds.variables[TERRAIN_VARIABLE][i0:i1, :]
    values = np.ma.filled(np.ma.asarray(raw, dtype=np.float64), np.nan)[:, level.columns]
    if np.isnan(values).any():
        raise UserError(f"terrain file {level.path} has missing values between "
                        f"{lat_min:.2f}° and {lat_max:.2f}°N: {INSTALL_HINT}")
    return level.latitudes[i0:i1], values


def _bilinear(lat_src: np.ndarray, lon_src: np.ndarray, values: np.ndarray,
              lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of `values` (ny, nx) on ascending (lat_src, lon_src ⊂ [0, 360))
    at points (lat, lon) (n,), wrapping longitude and clamping latitude to the source range."""
    # one wrapped column each side makes every longitude in [0, 360) an interior point
    lon_ext = np.concatenate([[lon_src[-1] - 360.0], lon_src, [lon_src[0] + 360.0]])
    val_ext = np.concatenate([values[:, -1:], values, values[:, :1]], axis=1)
    interp = RegularGridInterpolator((lat_src, lon_ext), val_ext, method="linear")
    points = np.stack([np.clip(lat, lat_src[0], lat_src[-1]), lon % 360.0], axis=-1)
    out = np.empty(lat.shape[0], dtype=np.float64)
    for start in range(0, lat.shape[0], _QUERY_CHUNK):
        out[start:start + _QUERY_CHUNK] = interp(points[start:start + _QUERY_CHUNK])
    return out


def terrain_on_points(terrain: Terrain, latitudes: np.ndarray, longitudes: np.ndarray,
                      spacing_deg: float, *, orography: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Terrain at points (n,) for a grid of typical spacing `spacing_deg`.

    Returns (elevation_m (n,) float64, land_fraction (n,) float64 in [0, 1]). Elevation is
    ETOPO relief (negative over the ocean); with ``orography=True`` it is the surface height
    max(relief, 0) (see the module docstring).
    """
    lat = np.asarray(latitudes, dtype=np.float64)
    lon = np.asarray(longitudes, dtype=np.float64)
    level = select_level(terrain, spacing_deg)
    lat_src, relief = _read_band(level, float(lat.min()), float(lat.max()))
    height = np.maximum(relief, 0.0) if orography else relief
    elevation = _bilinear(lat_src, level.longitudes, height, lat, lon)
    land = _bilinear(lat_src, level.longitudes, (relief > 0.0).astype(np.float64), lat, lon)
    return elevation, np.clip(land, 0.0, 1.0)


def terrain_on_grid(terrain: Terrain, grid: Grid, *, orography: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Terrain on the cells of `grid` (SFC order): (elevation_m (n,), land_fraction (n,)),
    float64, from the pyramid level matching the grid spacing. See `terrain_on_points`."""
    return terrain_on_points(terrain, grid.latitudes, grid.longitudes,
                             grid_spacing_deg(grid), orography=orography)
