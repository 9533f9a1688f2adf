"""Spectra: DCT (Denis et al. 2002) on limited areas, spherical harmonics on global grids."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from scipy.special import sph_harm_y

from hpcds.config.schema import GridConfig
from hpcds.evaluate.spectra import (dct_spectrum, grid_spacing_km, high_wavenumber_ratio,
                                    lr_nyquist_k, worst_bin,
                                    octahedral_synthesis, power_law_slope, sh_spectrum,
                                    spectral_ratio, spectrum_for_grid)
from hpcds.grids.spec import grid_from_name, make_grid


def power_law_field(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic isotropic Gaussian random field (n, n) whose annulus-summed 1-D spectrum is
    ∝ k^-beta: 2-D spectral density ∝ k^(-beta-1), amplitude ∝ k^(-(beta+1)/2)."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    amp = np.zeros_like(k)
    amp[k > 0] = k[k > 0] ** (-(beta + 1.0) / 2.0)
    noise = np.fft.fft2(rng.standard_normal((n, n)))
    return np.fft.ifft2(noise * amp).real


@pytest.mark.parametrize("beta", [3.0, 5.0 / 3.0])
def test_dct_spectrum_recovers_power_law_slope(beta):
    rng = np.random.default_rng(1)
    fields = np.stack([power_law_field(256, beta, rng) for _ in range(4)])
    k, power = dct_spectrum(fields, dx_km=2.5, dy_km=2.5)
    assert power.shape == (4, k.size)
    mean = power.mean(axis=0)
    slope = power_law_slope(k, mean, k[4], k[k.size // 2])
    assert abs(slope + beta) < 0.1, slope


def test_dct_parseval_with_batch_axes():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((2, 3, 40, 57)) + 3.0
    k, power = dct_spectrum(f, dx_km=3.0, dy_km=1.5)
    lhs = power.sum(axis=-1) + f.mean(axis=(-2, -1)) ** 2
    np.testing.assert_allclose(lhs, (f ** 2).mean(axis=(-2, -1)), rtol=1e-12)
    np.testing.assert_allclose(power.sum(axis=-1), f.var(axis=(-2, -1)), rtol=1e-12)
    assert np.all(np.diff(k) > 0) and k[0] > 0


def test_dct_single_mode_lands_at_its_physical_wavenumber():
    ny, nx, dx, dy = 48, 80, 2.0, 5.0  # anisotropic spacing
    coef = np.zeros((ny, nx))
    coef[6, 20] = 1.0  # ky = π·6/(48·5), kx = π·20/(80·2)
    field = scipy.fft.idctn(coef, type=2, norm="ortho")
    k, power = dct_spectrum(field, dx, dy)
    expected = np.hypot(np.pi * 6 / (ny * dy), np.pi * 20 / (nx * dx))
    b = int(np.argmax(power))
    assert abs(k[b] - expected) <= (k[1] - k[0]) / 2 + 1e-12
    assert power[b] == pytest.approx(1.0 / (ny * nx))
    assert np.delete(power, b).max() < 1e-25 * power[b]


def _real_ylm(l, m, grid):
    """sqrt(2)·Re Y_l^m (m > 0) or Y_l^0: real, unit ∫f² dΩ."""
    y = sph_harm_y(l, m, np.deg2rad(90.0 - grid.latitudes), np.deg2rad(grid.longitudes))
    return y.real if m == 0 else np.sqrt(2.0) * y.real


@pytest.mark.parametrize("name", ["O32", "O48", "2.0/2.0"])
@pytest.mark.parametrize("lm", [(0, 0), (5, 0), (12, 7), (25, 25), (30, 1)])
def test_single_spherical_harmonic_has_power_at_its_l_only(name, lm):
    grid = grid_from_name(name)
    l, m = lm
    ls, power = sh_spectrum(_real_ylm(l, m, grid), grid)
    assert power[l] == pytest.approx(1.0 / (4.0 * np.pi), rel=1e-10)
    assert np.max(np.delete(power, l)) < 1e-8 * power[l]
    assert ls[-1] == {"O32": 31, "O48": 47, "2.0/2.0": 89}[name]  # N-1; min(nlat-2, nlon//2-1)


def test_lsqr_analysis_is_exact_up_to_the_linear_truncation():
    grid = grid_from_name("O32")
    f = _real_ylm(60, 50, grid)  # beyond the cubic lmax N-1 = 31
    _, power = sh_spectrum(f, grid, lmax=63, method="lsqr")
    assert np.max(np.delete(power, 60)) < 1e-8 * power[60]


@pytest.mark.parametrize("name", ["O32", "O48"])
def test_sh_parseval_on_octahedral_grid(name):
    grid = grid_from_name(name)
    lmax = int(name[1:]) - 1
    rng = np.random.default_rng(3)
    nalm = (lmax + 1) * (lmax + 2) // 2
    alm = rng.standard_normal(nalm) + 1j * rng.standard_normal(nalm)
    alm[: lmax + 1] = alm[: lmax + 1].real  # m = 0 coefficients of a real field are real
    f = octahedral_synthesis(alm, grid, lmax)
    _, power = sh_spectrum(np.stack([f, 2 * f]), grid)
    area_mean = (grid.area_weights * f ** 2).sum()
    np.testing.assert_allclose(power.sum(axis=-1), [area_mean, 4 * area_mean], rtol=1e-10)
    assert power[0, 0] == pytest.approx((grid.area_weights * f).sum() ** 2, rel=1e-10)


def test_sh_power_law_slope_recovered():
    grid = grid_from_name("O96")
    lmax, s = 95, 3.0
    rng = np.random.default_rng(4)
    ls = np.concatenate([np.arange(lmax + 1 - m) + m for m in range(lmax + 1)])
    sigma = np.where(ls > 0, np.maximum(ls, 1.0) ** (-s / 2) / np.sqrt(2 * ls + 1), 0.0)
    alm = sigma * (rng.standard_normal(ls.size) + 1j * rng.standard_normal(ls.size))
    alm[: lmax + 1] = alm[: lmax + 1].real * np.sqrt(2.0)
    f = octahedral_synthesis(alm, grid, lmax)
    l, power = sh_spectrum(f, grid)
    assert abs(power_law_slope(l, power, 5, lmax) + s) < 0.1


def test_spectrum_for_grid_dispatches_by_kind():
    rng = np.random.default_rng(5)
    glob = grid_from_name("O32")
    k, p, label = spectrum_for_grid(rng.standard_normal((2, glob.size)), glob)
    np.testing.assert_array_equal(k, np.arange(32))
    assert label.startswith("total wavenumber") and p.shape == (2, 32)
    alps = grid_from_name("0.125/0.125", "alps")
    assert alps.kind == "regular"
    dx, dy = grid_spacing_km(alps)
    assert dy == pytest.approx(np.deg2rad(0.125) * 6371.229, rel=1e-6)
    assert dx == pytest.approx(dy * np.cos(np.deg2rad(46.0)), rel=2e-3)
    f = rng.standard_normal(alps.size)
    _, p, label = spectrum_for_grid(f, alps)
    assert label == "wavenumber [rad/km]"
    assert p.sum() == pytest.approx(f.var(), rel=1e-12)  # SFC order does not matter
    rot = make_grid(GridConfig(name="0.11/0.11", area="2/-3/-2/3", rotated_pole=[39.25, -162]))
    assert rot.kind == "rotated"
    dx, dy = grid_spacing_km(rot)  # near the rotated equator both steps are ≈ 12.2 km
    assert dx == pytest.approx(dy, rel=1e-3) and dy == pytest.approx(12.23, rel=1e-3)
    with pytest.raises(ValueError):
        spectrum_for_grid(np.zeros(grid_from_name("O32", "alps").size),
                          grid_from_name("O32", "alps"))


def test_ratios_and_high_wavenumber_mean():
    truth = np.array([4.0, 2.0, 1.0, 0.5])
    ens = np.stack([truth * 0.5, truth * 1.5])
    np.testing.assert_allclose(spectral_ratio(ens, truth), 1.0)
    ratio = np.array([1.0, 1.0, 0.5, 0.25])
    k = np.array([1.0, 2.0, 3.0, 4.0])
    assert high_wavenumber_ratio(k, ratio) == pytest.approx(0.375)
    assert high_wavenumber_ratio(k, ratio, fraction=0.25) == pytest.approx(0.25)
    kk = np.arange(1.0, 50.0)
    assert power_law_slope(kk, 7.0 * kk ** -2.5, 2.0, 40.0) == pytest.approx(-2.5)


def test_worst_bin_and_the_lr_nyquist():
    k = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    ratio = np.array([9.0, 1.1, np.nan, 0.4, 2.2])  # 9 is below k_min, nan an empty bin
    assert worst_bin(k, ratio, 0.015) == 0.4  # |log 0.4| = 0.92 > |log 2.2| = 0.79
    assert worst_bin(k, ratio, 0.045) == 2.2
    assert worst_bin(k, np.array([1.0, 1.0, 0.0, 1.0, 1.0]), 0.0) == 0.0  # no power: worst
    assert np.isnan(worst_bin(k, np.full(5, np.nan), 0.0))
    # the Alps' 1° LR grid: Δy = 111.2 km (1° of latitude) is its coarser spacing
    lr = make_grid(GridConfig(name="1.0/1.0", area="alps"))
    assert lr_nyquist_k(lr) == pytest.approx(np.pi / (6371.229 * np.pi / 180), rel=1e-3)
    assert lr_nyquist_k(make_grid(GridConfig(name="O32"))) is None
