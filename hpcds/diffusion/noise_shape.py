r"""Noise coloured like the data: the forward process x_σ = y + σ·L z, z ~ N(0, I).

EDM adds white noise. On a limited-area raster (regular or rotated lat-lon) with
`diffusion.noise: residual_spectrum`, the noise is instead

    L z = C⁻¹ (a ⊙ C z),   C: the orthonormal 2-D DCT-II of each variable's (ny, nx) field,
    a_v(j, i)² ∝ max(P_v(b(j, i)) / P̄_v, floor)^exponent,   mean over coefficients of a_v² = 1,

with P_v(b) the training residuals' mean DCT power per coefficient in radial wavenumber bin b
(`radial_power`, the evaluation's bins: `hpcds.grids.spacing.dct_wavenumbers`) and P̄_v its
mean over all coefficients. a² averaging 1 keeps the noise's mean variance σ², which EDM's
c_in, c_skip and c_out assume.

Why. The denoiser's error where the data has little power decides the members' spectrum
there, and an MSE loss barely sees it: the benchmark's msl residual has 10⁻³–10⁻⁵ of its
power above 0.27 rad/km, and with white noise the members carried 36× the truth's power
there (perf/results/skill-20261204-coloured-noise.md). With exponent 1 every scale has the
same signal-to-noise ratio at each σ; the noise, and with it the denoiser's leftover error,
has the data's shape, so nothing has to be removed where the truth has nothing.

Sampling is unchanged but for the noise. With noise covariance σ²Σ (Σ = L Lᵀ, fixed) the
score is −Σ⁻¹(x − D(x; σ))/σ² and the probability-flow ODE dx/dσ = −σ Σ ∇log p_σ(x) =
(x − D)/σ is the same ODE in D; so every solver works as it is, given coloured initial
latents σ_max·L z and coloured churn noise (tests/diffusion/test_noise_shape.py checks
the spectra against the closed-form Wiener denoiser D = C⁻¹ P/(P + σ²a²) C x). The loss is
unchanged: the MSE is still minimised by the posterior mean.

Sharding. L mixes the whole field, so every rank draws the whole field's unit noise (a pure
function of global node indices, `hpcds.diffusion.noise`), colours it, and keeps its rows:
P ranks equal one process exactly. Each (sample, variable) field is transformed on its own,
so a value does not depend on the batch size either. Cost: 2 DCTs per field and draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from hpcds.config.schema import DiffusionConfig, NoiseKind
from hpcds.diffusion.noise import batch_noise
from hpcds.errors import ConfigError
from hpcds.grids.geometry import Grid
from hpcds.grids.spacing import dct_wavenumbers, grid_spacing_km


def is_coloured(d: DiffusionConfig) -> bool:
    """Whether a run with this diffusion config draws coloured noise (the deterministic
    regression draws none)."""
    return d.noise is not NoiseKind.white and not d.deterministic


@dataclass(frozen=True)
class NoiseSpectrum:
    """The data's radial DCT power: power (V, nb) float64, the mean squared orthonormal DCT
    coefficient of each variable in bins of width dk rad/km (bin 0 holds the mean term)."""

    dk: float
    power: np.ndarray

    def to_dict(self) -> dict:
        return {"dk": float(self.dk), "power": np.asarray(self.power).tolist()}

    @classmethod
    def from_dict(cls, payload: dict) -> "NoiseSpectrum":
        power = np.asarray(payload["power"], dtype=np.float64)
        if power.ndim != 2 or not np.isfinite(power).all() or (power < 0).any():
            raise ValueError("noise spectrum power must be a finite, non-negative (V, nb) table")
        return cls(float(payload["dk"]), power)


def raster_shape(grid: Grid) -> tuple[int, int, float, float]:
    """(ny, nx, dx km, dy km) of a limited-area regular or rotated HR grid; ConfigError
    otherwise (the DCT needs a rectangle)."""
    if grid.is_global or grid.kind not in ("regular", "rotated") or len(grid.field_shape) != 2:
        raise ConfigError(
            f"diffusion.noise=residual_spectrum needs a limited-area regular or rotated HR "
            f"grid (it colours noise with a 2-D DCT); grid.hr {grid.name!r} is "
            f"{'global' if grid.is_global else grid.kind}: set diffusion.noise=white")
    ny, nx = (int(n) for n in grid.field_shape)
    dx, dy = grid_spacing_km(grid)
    return ny, nx, dx, dy


def _to_fields(values: np.ndarray, grid: Grid, ny: int, nx: int) -> np.ndarray:
    """(B, N, V) in SFC order → (B, V, ny, nx) native rasters (float64)."""
    native = grid.to_native(np.asarray(values, dtype=np.float64), axis=1)
    return np.moveaxis(native, 1, -1).reshape(values.shape[0], values.shape[2], ny, nx)


def radial_power(values: np.ndarray, grid: Grid) -> NoiseSpectrum:
    """The mean DCT power per coefficient and radial bin of fields values (D, N, V) (SFC
    order; e.g. normalised training residuals), averaged over the D fields."""
    ny, nx, dx, dy = raster_shape(grid)
    _, dk, bins = dct_wavenumbers(ny, nx, dx, dy)
    fields = _to_fields(values, grid, ny, nx)
    counts = np.bincount(bins.ravel())
    power = np.zeros((fields.shape[1], counts.size))
    for d in range(fields.shape[0]):
        for v in range(fields.shape[1]):
            coef = scipy.fft.dctn(fields[d, v], type=2, norm="ortho")
            power[v] += np.bincount(bins.ravel(), weights=(coef * coef).ravel(),
                                    minlength=counts.size)
    power /= fields.shape[0] * np.maximum(counts, 1)
    return NoiseSpectrum(dk, power)


class NoiseShape:
    """L of the module docstring on `grid` for `spectrum`; `amplitude` (V, ny, nx) is a."""

    def __init__(self, grid: Grid, spectrum: NoiseSpectrum, exponent: float = 1.0,
                 floor: float = 1e-4):
        if not exponent > 0 or not 0 < floor <= 1:  # the config validator's bounds
            raise ValueError(f"noise exponent {exponent} must be > 0, floor {floor} in (0, 1]")
        self.grid = grid
        self.ny, self.nx, dx, dy = raster_shape(grid)
        _, dk, bins = dct_wavenumbers(self.ny, self.nx, dx, dy)
        power = spectrum.power
        if not np.isclose(dk, spectrum.dk, rtol=1e-9) or bins.max() >= power.shape[1]:
            raise ConfigError(
                f"the noise spectrum (bins of {spectrum.dk:.6g} rad/km, {power.shape[1]} of "
                f"them) was measured on another grid than grid.hr {grid.name!r} (bins of "
                f"{dk:.6g} rad/km up to {bins.max()}): sample on the grid the model was "
                "trained on")
        per_coef = power[:, bins]  # (V, ny, nx)
        mean = per_coef.mean(axis=(1, 2), keepdims=True)
        if (mean <= 0).any():
            raise ConfigError("the training residuals have no variance in some variable: "
                              "diffusion.noise=residual_spectrum cannot shape its noise")
        self._variance = mean.reshape(-1)  # (V,)
        a2 = np.maximum(per_coef / mean, floor) ** exponent
        self.amplitude = np.sqrt(a2 / a2.mean(axis=(1, 2), keepdims=True))
        self.n_vars = power.shape[0]

    def stochastic_variance(self) -> np.ndarray:
        """(V,) the measured fields' variance, the spectrum's mean power per coefficient:
        with diffusion.noise_detrend, the residual's part a per-node linear model of the LR
        input cannot explain (perf/noise_gain.py compares the denoiser's gain against it)."""
        return self._variance.copy()

    def apply(self, z: np.ndarray) -> np.ndarray:
        """L z for unit noise z (B, N, V) over the whole grid (SFC order) → (B, N, V) float64.
        One field at a time, so a sample's values do not depend on the batch."""
        B, N, V = z.shape
        if N != self.grid.size or V != self.n_vars:
            raise ValueError(f"noise of shape {z.shape}: the shape is for {self.grid.size} "
                             f"nodes and {self.n_vars} variables")
        fields = _to_fields(z, self.grid, self.ny, self.nx)
        out = np.empty_like(fields)
        for b in range(B):
            for v in range(V):
                coef = scipy.fft.dctn(fields[b, v], type=2, norm="ortho") * self.amplitude[v]
                out[b, v] = scipy.fft.idctn(coef, type=2, norm="ortho")
        native = np.moveaxis(out.reshape(B, V, N), 1, -1)
        return self.grid.from_native(native, axis=1)

    def draw(self, seed: int, members, step: int, node_index: np.ndarray,
             n_vars: int) -> np.ndarray:
        """`batch_noise`'s coloured counterpart: the whole grid's unit noise for (seed,
        members, step), coloured, at the rows `node_index` → (B, n, V) float64."""
        if n_vars != self.n_vars:
            raise ValueError(f"{n_vars} variables asked of a shape for {self.n_vars}")
        z = batch_noise(seed, members, step, np.arange(self.grid.size), n_vars)
        return self.apply(z)[:, np.asarray(node_index, dtype=np.int64)]
