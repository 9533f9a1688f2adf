"""Coloured diffusion noise (diffusion.noise=residual_spectrum, hpcds/diffusion/noise_shape.py).

References: the DCT-II written out as a cosine matrix (float64, not scipy), Parseval, and the
closed-form Wiener denoiser of a Gaussian field diagonal in the DCT basis; sharded draws
against the whole grid's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcds.config.schema import DiffusionConfig, GridConfig, SamplingConfig, Schedule, Solver
from hpcds.diffusion.noise import batch_noise, make_noise_fn
from hpcds.diffusion.noise_shape import NoiseShape, NoiseSpectrum, radial_power, raster_shape
from hpcds.diffusion.samplers import sample
from hpcds.diffusion.schedules import make_schedule
from hpcds.errors import ConfigError
from hpcds.grids.spacing import dct_wavenumbers
from hpcds.grids.spec import grid_from_name, make_grid

# a small limited-area raster (ny, nx) = (13, 17) whose SFC order is not the native one
GRID = grid_from_name("0.5/0.5", "50/2/44/10")


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II (n, n): C[k, i] = s_k cos(π k (2i + 1) / (2n))."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def native(values: np.ndarray) -> np.ndarray:
    """(..., N) SFC → (..., ny, nx)."""
    return GRID.to_native(values, axis=-1).reshape(values.shape[:-1] + GRID.field_shape)


def coloured_spectrum(exponent: float = 1.0) -> tuple[NoiseSpectrum, np.ndarray]:
    """A radial power law on GRID's bins and the per-coefficient power it gives (ny, nx)."""
    ny, nx, dx, dy = raster_shape(GRID)
    kk, dk, bins = dct_wavenumbers(ny, nx, dx, dy)
    k_bin = dk * np.arange(bins.max() + 1)
    power = (dk ** 2 + k_bin ** 2) ** -2.0
    return NoiseSpectrum(dk, np.stack([power, power ** 0.5])), power[bins]


def test_grid_is_a_shuffled_raster():
    assert GRID.kind == "regular" and GRID.field_shape == (13, 17)
    assert not np.array_equal(GRID.native_index, np.arange(GRID.size))


def test_radial_power_parseval_and_single_mode():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, GRID.size, 2))
    spec = radial_power(values, GRID)
    ny, nx, dx, dy = raster_shape(GRID)
    _, dk, bins = dct_wavenumbers(ny, nx, dx, dy)
    counts = np.bincount(bins.ravel())
    assert spec.dk == dk and spec.power.shape == (2, counts.size)
    # Parseval: Σ_b count_b·power_b = the fields' mean Σ_n x²
    np.testing.assert_allclose(spec.power @ counts, (values ** 2).sum(axis=1).mean(axis=0),
                               rtol=1e-12)
    # and the shape built from it reports the fields' variance (perf/noise_gain.py's s²)
    np.testing.assert_allclose(NoiseShape(GRID, spec).stochastic_variance(),
                               (values ** 2).mean(axis=(0, 1)), rtol=1e-12)
    # one DCT basis function (built from the cosine matrix) lands in its bin only
    cy, cx = dct_matrix(ny), dct_matrix(nx)
    j, i = 4, 9
    field = np.outer(cy[j], cx[i])  # unit norm
    sfc = GRID.from_native(field.ravel())
    one = radial_power(sfc[None, :, None], GRID).power[0]
    expected = np.zeros(counts.size)
    expected[bins[j, i]] = 1.0 / counts[bins[j, i]]
    np.testing.assert_allclose(one, expected, atol=1e-14)


def test_shape_is_the_dct_filter_with_unit_mean_variance():
    spectrum, per_coef = coloured_spectrum()
    shape = NoiseShape(GRID, spectrum, exponent=1.0, floor=1e-4)
    ny, nx = GRID.field_shape
    # L as a dense matrix from the cosine matrices: C_y ⊗ C_x, then diag(a), then back
    c2 = np.kron(dct_matrix(ny), dct_matrix(nx))  # (N, N) native row-major
    a2 = np.maximum(per_coef / per_coef.mean(), 1e-4)
    a = np.sqrt(a2 / a2.mean()).ravel()
    dense = c2.T @ (a[:, None] * c2)
    z = np.random.default_rng(1).standard_normal((2, GRID.size, 2))
    got = native(np.moveaxis(shape.apply(z), 1, -1))[:, 0].reshape(2, -1)
    want = (dense @ native(np.moveaxis(z, 1, -1))[:, 0].reshape(2, -1).T).T
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.trace(dense @ dense.T) / GRID.size == pytest.approx(1.0, rel=1e-12)
    # a flat spectrum is white noise: L = I
    flat = NoiseShape(GRID, NoiseSpectrum(spectrum.dk, np.ones_like(spectrum.power)))
    np.testing.assert_allclose(flat.apply(z), z, atol=1e-12)


def test_draws_do_not_depend_on_sharding_or_batch():
    shape = NoiseShape(GRID, coloured_spectrum()[0])
    full = shape.draw(7, [3, 5], -1, np.arange(GRID.size), 2)
    rows = np.array([40, 3, 100, 101, 7])
    np.testing.assert_array_equal(shape.draw(7, [3, 5], -1, rows, 2), full[:, rows])
    np.testing.assert_array_equal(shape.draw(7, [5], -1, np.arange(GRID.size), 2)[0], full[1])
    white = batch_noise(7, [3, 5], -1, np.arange(GRID.size), 2)
    np.testing.assert_array_equal(full, shape.apply(white))
    fn = make_noise_fn(7, [3, 5], rows, 2, shape=shape)
    np.testing.assert_array_equal(fn(-1).numpy(), full[:, rows])


def test_bad_grids_are_refused():
    spectrum = coloured_spectrum()[0]
    with pytest.raises(ConfigError, match="diffusion.noise=white"):
        NoiseShape(grid_from_name("O32"), spectrum)
    with pytest.raises(ConfigError, match="another grid"):
        NoiseShape(grid_from_name("0.25/0.25", "50/2/44/10"), spectrum)
    rotated = make_grid(GridConfig(name="0.5/0.5", area="3/-4/-3/4", rotated_pole=[39.25, -162]))
    assert raster_shape(rotated)[:2] == rotated.field_shape


def _impulse_gain(cfg: SamplingConfig, shape: NoiseShape, prior: np.ndarray,
                  sigma_max: float = 80.0) -> np.ndarray:
    """g (ny, nx): the sampler's output DCT coefficient per unit latent DCT coefficient, with
    coloured latents σ_0·L z and the exact denoiser of the Gaussian field with per-coefficient
    variance `prior` under noise σ²a²: D = C⁻¹ (prior / (prior + σ² a²)) C x. Everything is
    diagonal in the DCT basis, so one member per coefficient (an impulse) gives g exactly."""
    ny, nx = GRID.field_shape
    cy, cx = torch.from_numpy(dct_matrix(ny)), torch.from_numpy(dct_matrix(nx))
    a2 = torch.from_numpy(shape.amplitude[0] ** 2)
    p = torch.from_numpy(prior)
    order = torch.from_numpy(np.array(GRID.native_index))

    def to_native(x):  # (B, N, 1) SFC → (B, ny, nx)
        out = torch.empty_like(x[..., 0])
        out[:, order] = x[..., 0]
        return out.reshape(-1, ny, nx)

    def to_sfc(f):
        return f.reshape(f.shape[0], -1)[:, order][..., None]

    def denoise(x, sigma):
        coef = cy @ to_native(x) @ cx.T
        return to_sfc(cy.T @ (coef * p / (p + sigma ** 2 * a2)) @ cx)

    n = ny * nx
    impulses = torch.eye(n, dtype=torch.float64).reshape(n, ny, nx)  # unit DCT coefficients
    z = to_sfc(cy.T @ impulses @ cx).numpy()  # (n, N, 1) white-noise directions
    latents = torch.from_numpy(shape.apply(z))
    sigmas = make_schedule(cfg, DiffusionConfig(sigma_max=sigma_max))  # σ 0.002 … σ_max, ρ 7
    out = sample(cfg, denoise, sigmas[0] * latents, sigmas)
    coef = cy @ to_native(out) @ cx.T  # (n, ny, nx): impulse m's output coefficients
    g = coef.reshape(n, n).diagonal().reshape(ny, nx)
    off = coef.reshape(n, n) - torch.diag_embed(coef.reshape(n, n).diagonal())
    assert off.abs().max() < 1e-9 * g.abs().max()  # diagonal, as it must be
    return g.numpy()


@pytest.mark.parametrize("solver,steps,sigma_max", [("dpmpp_2m", 40, 80.0),
                                                     ("heun", 40, 80.0),
                                                     ("dpmpp_2m", 40, 10.0)])
def test_coloured_sampling_reproduces_the_spectrum_at_every_scale(solver, steps, sigma_max):
    """With noise coloured like the prior (exponent 1), every coefficient has the same
    signal-to-noise ratio at each σ: the sampled power over the prior is one number for all
    scales (the solver's error is spread evenly instead of growing with wavenumber as with
    white noise, test_exact_denoiser.py), within 2 % at 40 steps: measured 1.017 (dpmpp_2m),
    1.016 (heun); at 20 steps 1.082 and 1.072, at 16 (dpmpp_2m) 1.138. With coloured noise
    the signal-to-noise ratio is 1/σ² at every scale, so σ_max = 10 (1 %) already buries all
    of them (white noise needs σ_max² ≫ the largest per-mode power): dpmpp_2m 40 steps from
    10 gives 0.997 (20 steps: 1.023), the demo's setting."""
    spectrum, per_coef = coloured_spectrum()
    shape = NoiseShape(GRID, NoiseSpectrum(spectrum.dk, spectrum.power[:1]), 1.0, 1e-12)
    prior = per_coef / per_coef.mean()  # unit variance per node, like normalised targets
    cfg = SamplingConfig(solver=Solver(solver), schedule=Schedule.karras, steps=steps)
    ratio = _impulse_gain(cfg, shape, prior, sigma_max) ** 2 / prior
    assert ratio.std() / ratio.mean() < 1e-9  # the same at every scale
    assert abs(ratio.mean() - 1) < 0.02
