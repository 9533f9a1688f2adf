"""Octahedral reduced Gaussian grids O<N> (the IFS grids since 2016).

2N latitude rings at the Gaussian latitudes (roots of the Legendre polynomial P_2N); ring i
(i = 0..N-1, counted from either pole) holds 20 + 4i equally spaced points starting at 0°E.
O<N> has 4N² + 36N points: O320 421,120, O1280 6,599,680, O2560 26,306,560.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hpcds.errors import GridError
from hpcds.grids.regions import Area

_EPS_DEG = 1e-9


def _legendre_and_derivative(n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P_n(x) and P_n'(x) by the three-term recurrence, vectorised over x (|x| < 1)."""
    p_prev = np.ones_like(x)
    p = x.copy()
    for j in range(2, n + 1):
        p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
    dp = n * (x * p - p_prev) / (x * x - 1.0)
    return p, dp


@lru_cache(maxsize=8)
def _gaussian_latitudes(n_lat: int) -> tuple[np.ndarray, np.ndarray]:
    # Only the northern half: the roots are symmetric, x_{n-1-k} = -x_k.
    half = (n_lat + 1) // 2
    k = np.arange(1, half + 1, dtype=np.float64)
    # Tricomi's asymptotic first guess, accurate to O(n^-4): a few Newton steps finish it
    theta = np.pi * (4.0 * k - 1.0) / (4.0 * n_lat + 2.0)
    x = (1.0 - (n_lat - 1.0) / (8.0 * n_lat**3)) * np.cos(theta)
    if n_lat % 2:
        x[-1] = 0.0  # the equator is an exact root of odd-degree P_n
    for _ in range(50):
        p, dp = _legendre_and_derivative(n_lat, x)
        dx = p / dp
        x -= dx
        # Newton is quadratic: once a step is 1e-12 the next error is far below rounding
        if np.max(np.abs(dx)) < 1e-12:
            break
    else:  # pragma: no cover - the guess is within the basin for every n
        raise RuntimeError(f"Newton iteration for the roots of P_{n_lat} did not converge")
    _, dp = _legendre_and_derivative(n_lat, x)
    w = 2.0 / ((1.0 - x * x) * dp * dp)
    mirror = slice(None, n_lat // 2)  # the odd middle root is not mirrored
    x = np.concatenate([x, -x[mirror][::-1]])
    w = np.concatenate([w, w[mirror][::-1]])
    lat = np.rad2deg(np.arcsin(x))
    lat.setflags(write=False)
    w.setflags(write=False)
    return lat, w


def gaussian_latitudes(n_lat: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre latitudes and weights.

    Returns lat_deg (n_lat,) float64, north to south (lat = asin of the roots of P_n_lat), and
    weights (n_lat,) float64 summing to 2. O(n_lat²) work (Newton on the recurrence), so
    n_lat = 5120 (O2560) takes well under a second. Results are cached and read-only.
    """
    if int(n_lat) != n_lat or n_lat < 1:
        raise GridError(f"number of Gaussian latitudes must be a positive integer, "
                        f"got {n_lat!r}")
    return _gaussian_latitudes(int(n_lat))


def octahedral_pl(N: int) -> np.ndarray:
    """(2N,) int64 points per ring, north to south: 20, 24, ..., 16 + 4N, 16 + 4N, ..., 20."""
    _check_n(N)
    north = 20 + 4 * np.arange(N, dtype=np.int64)
    return np.concatenate([north, north[::-1]])


def octahedral_size(N: int) -> int:
    """Number of points of O<N>: 4N² + 36N."""
    _check_n(N)
    return 4 * N * N + 36 * N


def _check_n(N: int) -> None:
    if int(N) != N or N < 1:
        raise GridError(f"octahedral grid O{N}: N must be a positive integer, e.g. O320")


def _ring_columns(pl: np.ndarray, area: Area | None) -> tuple[np.ndarray, np.ndarray]:
    """First column index j0 (may be negative: west of 0°E) and count per ring of the points
    whose longitude 360 j / pl lies in the area's longitude interval (all points if None)."""
    if area is None or area.full_circle:
        return np.zeros_like(pl), pl.copy()
    j0 = np.ceil(area.west * pl / 360.0 - _EPS_DEG).astype(np.int64)
    j1 = np.floor(area.east * pl / 360.0 + _EPS_DEG).astype(np.int64)
    return j0, np.clip(j1 - j0 + 1, 0, pl)


def octahedral_ring_layout(N: int, area: Area | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The part of O<N> inside `area`, ring by ring, without building coordinates.

    Returns ring latitudes (2N,) degrees, gauss weights (2N,), first column j0 (2N,) int64 and
    number of selected points (2N,) int64 (0 for rings outside the area).
    """
    lat, w = gaussian_latitudes(2 * N)
    pl = octahedral_pl(N)
    j0, count = _ring_columns(pl, area)
    if area is not None:
        inside = (lat <= area.north + _EPS_DEG) & (lat >= area.south - _EPS_DEG)
        count = np.where(inside, count, 0)
    return lat, w, j0, count


def octahedral_coordinates(N: int, area: Area | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Native-order cells of O<N> (optionally only those inside `area`).

    Native order is ring by ring from the north; within a ring west to east, starting at 0°E
    for the global grid (the GRIB order) and at the area's west edge for a sub-area.
    Returns lat (n,), lon (n,) in [0, 360) degrees and area weights (n,) summing to 1: the
    ring's Gauss weight shared equally by its pl points.
    """
    lat_ring, w_ring, j0, count = octahedral_ring_layout(N, area)
    pl = octahedral_pl(N)
    n = int(count.sum())
    if n == 0:
        raise GridError(f"area {area.spec()} contains no point of O{N}; enlarge the area")
    ring = np.repeat(np.arange(2 * N), count)
    start = np.cumsum(count) - count  # native position of each ring's first selected point
    j = np.arange(n, dtype=np.int64) - start[ring] + j0[ring]
    lon = (360.0 * j / pl[ring]) % 360.0
    weights = w_ring[ring] / pl[ring]
    return lat_ring[ring], lon, weights / weights.sum()
