"""Power spectra of downscaled fields: DCT spectra on limited-area grids, spherical-harmonic
spectra on global grids, and the ratios/slopes used to judge small-scale variability.

Conventions (all float64):
  * DCT (Denis et al. 2002, MWR 130): wavenumbers k are in **rad/km** (k = π·i/(Nx·dx) along
    x); a wavelength λ km is k = 2π/λ.
  * SH: the spectrum is indexed by total wavenumber l (dimensionless); a rough wavelength is
    2π·R/l (R = 6371.229 km).
  * Both spectra are *variance-like*: summed over every bin (including the l = 0 / k = 0
    mean term) they give the (area-)mean of field² — see `dct_spectrum` and `sh_spectrum`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from hpcds.grids.geometry import Grid
from hpcds.grids.spacing import dct_wavenumbers, grid_spacing_km  # noqa: F401 (re-exported)
from hpcds.grids.octahedral import gaussian_latitudes, octahedral_pl



# --------------------------------------------------------------------------- DCT spectra
def dct_spectrum(field: np.ndarray, dx_km: float, dy_km: float,
                 n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially binned 2-D DCT-II variance spectrum of a limited-area field (Denis et al. 2002).

    field (..., ny, nx) → k (nk,) bin-centre wavenumbers in rad/km, power (..., nk).

    F = dctn(field, type=2, norm="ortho") over the last two axes; the coefficient (j, i)
    (j along y, i along x) has physical wavenumber (ky, kx) = (π j/(ny dy), π i/(nx dx)) and
    variance σ²(j, i) = F(j, i)²/(ny·nx). Coefficients are binned by |k| in annuli of width
    Δk = π/max(nx dx, ny dy) (the coarser of the two fundamental wavenumbers; bins centred
    at Δk, 2Δk, …, nk = number of bins up to the largest |k|, or `n_bins`). The mean term
    (0, 0) is excluded from `power`; with it, Parseval reads exactly
        Σ_k power + mean(field)² = mean(field²)      (orthonormal DCT),
    i.e. Σ_k power = the (population) variance of the field.
    """
    f = np.asarray(field, dtype=np.float64)
    ny, nx = f.shape[-2:]
    coef = scipy.fft.dctn(f, type=2, norm="ortho", axes=(-2, -1))
    var = coef ** 2 / (ny * nx)
    kk, dk, bins = dct_wavenumbers(ny, nx, dx_km, dy_km)
    nk = int(n_bins) if n_bins else int(np.ceil(kk.max() / dk - 0.5)) + 1
    # bin b (1..nk) holds (b - 1/2) Δk <= |k| < (b + 1/2) Δk; the mean term is bin 0
    idx = np.clip(bins, 0, nk).ravel()
    idx[0] = nk + 1  # drop the mean
    flat = var.reshape(-1, ny * nx)
    power = np.zeros((flat.shape[0], nk + 2))
    for r in range(flat.shape[0]):
        power[r] = np.bincount(idx, weights=flat[r], minlength=nk + 2)
    # the bin 0 annulus (|k| < Δk/2, not the mean) joins bin 1 so that nothing is lost
    power[:, 1] += power[:, 0]
    k = dk * np.arange(1, nk + 1)
    return k, power[:, 1:nk + 1].reshape(f.shape[:-2] + (nk,))


# --------------------------------------------------------------------------- SH spectra
def _power_from_alm(alm: np.ndarray, lmax: int) -> np.ndarray:
    """(..., nalm) complex (ducc0 m-major layout, mmax = lmax) → (..., lmax+1) area-mean
    power: (|a_l0|² + 2 Σ_{m>0} |a_lm|²)/(4π)."""
    power = np.zeros(alm.shape[:-1] + (lmax + 1,))
    pos = 0
    for m in range(lmax + 1):
        block = np.abs(alm[..., pos:pos + lmax + 1 - m]) ** 2
        power[..., m:] += block if m == 0 else 2.0 * block
        pos += lmax + 1 - m
    return power / (4.0 * np.pi)


def octahedral_lmax(N: int) -> int:
    """Truncation used for O<N>: the cubic truncation TCo(N−1) of the IFS, lmax = N − 1.

    2N Gaussian rings integrate products of two degree-(N−1) fields exactly in latitude, and
    the octahedral rings (20 + 4i points) resolve m ≤ N−1 wherever P_l^m is not negligible
    (quadrature is exact to rounding there, see the tests). The linear limit 2N−1 would need
    ≥ 4N points on every ring, which the polar rings lack: quadrature aliases there, and the
    least-squares inverse is ill-conditioned for fields not band-limited to 2N−1."""
    return int(N) - 1


def _octahedral_n(grid: Grid) -> int:
    """N of an O<N> grid, from the spec it was built from."""
    if grid.kind != "octahedral":
        raise ValueError(f"grid {grid.name!r} is not an octahedral O<N> grid")
    return grid.spec.N


def _octahedral_geometry(N: int, lmax: int, nthreads: int = 1) -> dict:
    """ducc0 per-ring geometry of the global O<N> in native order (rings N → S from 0°E)."""
    lat, _ = gaussian_latitudes(2 * N)
    nphi = octahedral_pl(N).astype(np.uintp)
    return {"theta": np.deg2rad(90.0 - lat), "nphi": nphi, "phi0": np.zeros(2 * N),
            "ringstart": (np.cumsum(nphi) - nphi).astype(np.uintp), "spin": 0,
            "lmax": int(lmax), "nthreads": nthreads}


def octahedral_synthesis(alm: np.ndarray, grid: Grid, lmax: int) -> np.ndarray:
    """Field (n,) in SFC order on a global O<N> grid from a_lm (nalm,) complex (ducc0
    layout, m-major, mmax = lmax, orthonormal Y_lm, real field)."""
    from ducc0.sht.experimental import synthesis

    N = _octahedral_n(grid)
    out = synthesis(alm=np.asarray(alm, dtype=np.complex128)[None, :],
                    **_octahedral_geometry(N, lmax))
    return grid.from_native(out[0])


def _octahedral_alm(native: np.ndarray, N: int, lmax: int, method: str,
                    nthreads: int) -> np.ndarray:
    from ducc0.sht.experimental import adjoint_synthesis, pseudo_analysis

    geom = _octahedral_geometry(N, lmax, nthreads)
    _, w = gaussian_latitudes(2 * N)
    ring_w = 2.0 * np.pi * w / geom["nphi"]  # solid angle of each point of the ring
    out = []
    for field in native.reshape(-1, native.shape[-1]):
        m = field[None, :].astype(np.float64)
        if method == "lsqr":  # LSQR inverse of synthesis, exact for band-limited fields
            alm = pseudo_analysis(map=m, maxiter=100, epsilon=1e-12, **geom)[0]
        else:  # Gaussian quadrature
            alm = adjoint_synthesis(map=m, ringfactor=ring_w, **geom)
        out.append(alm[0])
    return np.asarray(out).reshape(native.shape[:-1] + (-1,))


def sh_spectrum(values: np.ndarray, grid: Grid, lmax: int | None = None,
                method: str = "quadrature", nthreads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Spherical-harmonic power spectrum of fields on a global grid.

    values (..., n) in the grid's SFC order → l (lmax+1,) int, power (..., lmax+1) with
    power_l = (|a_l0|² + 2 Σ_{m=1..l} |a_lm|²)/(4π) for orthonormal Y_lm (∫|Y_lm|² dΩ = 1),
    so Σ_l power_l = (1/4π)∫ f² dΩ, the area mean of f² (power_0 = mean²), exactly for
    fields band-limited to lmax.

    Octahedral O<N>: the a_lm come straight from the reduced grid with ducc0's per-ring
    geometry (theta, nphi, phi0, ringstart). method="quadrature" (default): one
    `adjoint_synthesis` with ringfactor = Gauss weight·2π/nphi; exact (to rounding) for
    fields band-limited to lmax <= N−1, and ≈15× faster than method="lsqr": ducc0's
    `pseudo_analysis` (LSQR inverse of synthesis), which stays exact for band-limited fields
    up to lmax = 2N−1 but is ill-conditioned there for fields with power beyond lmax (white
    noise on O96 at lmax 191 inflates the top bins ~100×). Default lmax = N−1
    (`octahedral_lmax`). Power beyond lmax is not in any bin, so for fields that are not
    band-limited Σ_l power_l falls short of the area mean of f².
    Regular global lat-lon (rows 90 → −90 inclusive, columns from 0°E): the Clenshaw–Curtis
    ("CC") grid of `ducc0.sht.analysis_2d`, default lmax = min(nlat−2, (nlon−1)//2).
    """
    from ducc0.sht import analysis_2d

    if not grid.is_global:
        raise ValueError(f"sh_spectrum needs a global grid, got {grid.name!r}; "
                         "use dct_spectrum / spectrum_for_grid for limited areas")
    native = grid.to_native(np.asarray(values, dtype=np.float64), axis=-1)
    if grid.kind == "octahedral":
        N = _octahedral_n(grid)
        lmax = octahedral_lmax(N) if lmax is None else int(lmax)
        if method not in ("quadrature", "lsqr"):
            raise ValueError(f"method={method!r}: use 'quadrature' or 'lsqr'")
        alm = _octahedral_alm(native, N, lmax, method, nthreads)
    elif grid.kind == "regular":
        nlat, nlon = grid.field_shape
        lmax = min(nlat - 2, (nlon - 1) // 2) if lmax is None else int(lmax)
        maps = native.reshape(-1, 1, nlat, nlon)
        alm = np.asarray([analysis_2d(map=m, spin=0, lmax=lmax, geometry="CC",
                                      nthreads=nthreads)[0] for m in maps])
        alm = alm.reshape(native.shape[:-1] + (-1,))
    else:
        raise ValueError(f"sh_spectrum: unsupported global grid {grid.name!r}")
    return np.arange(lmax + 1), _power_from_alm(alm, lmax)


# --------------------------------------------------------------------------- dispatch & ratios
def spectrum_for_grid(values: np.ndarray, grid: Grid, **kwargs
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """values (..., n) in SFC order → (k, power (..., nk), units label).

    Global grids: `sh_spectrum` (label "total wavenumber l"). Regular/rotated limited areas:
    `dct_spectrum` of the (nlat, nlon) raster with dx, dy from `grid_spacing_km` (label
    "wavenumber [rad/km]"). Reduced (octahedral) sub-areas are not rasters: ValueError.
    """
    if grid.is_global:
        l, power = sh_spectrum(values, grid, **kwargs)
        return l, power, "total wavenumber l"
    if grid.kind == "octahedral" or len(grid.field_shape) != 2:
        raise ValueError(f"no spectrum for reduced-grid sub-area {grid.name!r}: interpolate "
                         "to a regular or rotated grid first")
    native = grid.to_native(np.asarray(values, dtype=np.float64), axis=-1)
    field = native.reshape(native.shape[:-1] + tuple(grid.field_shape))
    dx, dy = grid_spacing_km(grid)
    k, power = dct_spectrum(field, dx, dy, **kwargs)
    return k, power, "wavenumber [rad/km]"


def spectral_ratio(power_ens: np.ndarray, power_truth: np.ndarray) -> np.ndarray:
    """(nk,) ratio of the ensemble's power to the truth's: power_ens (M, nk) members
    (averaged over M first) or (nk,) already a mean; bins with zero truth power → nan."""
    p = np.asarray(power_ens, dtype=np.float64)
    p = p.mean(axis=0) if p.ndim == 2 else p
    t = np.asarray(power_truth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, p / t, np.nan)


def high_wavenumber_ratio(k: np.ndarray, ratio: np.ndarray, fraction: float = 0.5) -> float:
    """Mean of `ratio` over the top `fraction` of the resolved wavenumbers
    (k > k_max·(1 − fraction); fraction=0.5: the upper half of the k range), ignoring nan
    bins."""
    k = np.asarray(k, dtype=np.float64)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    sel = k > k.max() * (1.0 - fraction)
    return float(np.nanmean(np.asarray(ratio, dtype=np.float64)[sel]))


def lr_nyquist_k(lr: Grid) -> float | None:
    """π/Δ of a limited-area LR grid in rad/km (Δ its coarser spacing), the DCT spectra's
    wavenumber of 2 LR spacings: above it the HR variability is the downscaler's own. None
    for a global LR grid (its spectra are indexed by l)."""
    if lr.is_global:
        return None
    dx, dy = grid_spacing_km(lr)
    return math.pi / max(dx, dy)


def worst_bin(k: np.ndarray, ratio: np.ndarray, k_min: float) -> float:
    """The bin ratio farthest from 1 (in log) among the bins with k > k_min, ignoring nan
    (empty) bins; nan when there is none."""
    r = np.asarray(ratio, dtype=np.float64)[np.asarray(k) > k_min]
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(np.log(r))
    if np.isnan(far).all():
        return math.nan
    return float(r[np.nanargmax(far)])  # a bin with no power at all (ratio 0) is the worst


def power_law_slope(k: np.ndarray, power: np.ndarray, kmin: float, kmax: float) -> float:
    """Least-squares slope of log(power) against log(k) over kmin <= k <= kmax (bins with
    k > 0 and power > 0); power ∝ k^s gives s."""
    k = np.asarray(k, dtype=np.float64)
    p = np.asarray(power, dtype=np.float64)
    sel = (k >= kmin) & (k <= kmax) & (k > 0) & (p > 0)
    if sel.sum() < 2:
        raise ValueError(f"fewer than 2 positive bins in [{kmin}, {kmax}]")
    return float(np.polyfit(np.log(k[sel]), np.log(p[sel]), 1)[0])
