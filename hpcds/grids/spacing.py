"""Grid spacing of rectangular (regular or rotated lat-lon) rasters, in km.

Used where a raster is treated as a plane with steps (dx, dy): the DCT spectra of the
evaluation and the DCT noise shape of the diffusion (`hpcds.diffusion.noise_shape`).
"""

from __future__ import annotations

import numpy as np

from hpcds.grids.geometry import EARTH_RADIUS_M, Grid

_R_KM = EARTH_RADIUS_M / 1e3


def _great_circle_km(lat1, lon1, lat2, lon2) -> float:
    p1, p2, dl = np.deg2rad(lat1), np.deg2rad(lat2), np.deg2rad(lon2 - lon1)
    c = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)
    return float(_R_KM * np.arccos(np.clip(c, -1.0, 1.0)))


def grid_spacing_km(grid: Grid) -> tuple[float, float]:
    """(dx, dy) km of a rectangular grid at the domain centre: great-circle distances from the
    centre cell to its east and south neighbours (works for regular and rotated grids)."""
    ny, nx = grid.field_shape
    lat = grid.to_native(grid.latitudes).reshape(ny, nx)
    lon = grid.to_native(grid.longitudes).reshape(ny, nx)
    i, j = min(ny // 2, ny - 2), min(nx // 2, nx - 2)
    return (_great_circle_km(lat[i, j], lon[i, j], lat[i, j + 1], lon[i, j + 1]),
            _great_circle_km(lat[i, j], lon[i, j], lat[i + 1, j], lon[i + 1, j]))


def dct_wavenumbers(ny: int, nx: int, dx_km: float, dy_km: float
                    ) -> tuple[np.ndarray, float, np.ndarray]:
    """The DCT-II coefficients' wavenumbers of an (ny, nx) raster with steps (dx, dy) km.

    Returns |k| (ny, nx) rad/km — coefficient (j, i) has (ky, kx) = (π j/(ny dy), π i/(nx dx))
    — the radial bin width Δk = π/max(nx dx, ny dy) rad/km and each coefficient's bin
    (ny, nx) int64: bin b holds (b − 1/2) Δk ≤ |k| < (b + 1/2) Δk (Denis et al. 2002)."""
    ky = np.pi * np.arange(ny) / (ny * dy_km)
    kx = np.pi * np.arange(nx) / (nx * dx_km)
    kk = np.hypot(ky[:, None], kx[None, :])
    dk = float(np.pi / max(nx * dx_km, ny * dy_km))
    return kk, dk, np.floor(kk / dk + 0.5).astype(np.int64)
