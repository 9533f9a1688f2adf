"""Sampling schedules: endpoints, monotonicity, length, the piecewise split."""

from __future__ import annotations

import pytest
import torch

from hpcds.config.schema import DiffusionConfig, SamplingConfig, Schedule
from hpcds.diffusion.schedules import karras_sigmas, make_schedule, piecewise_sigmas


@pytest.mark.parametrize("n", [1, 2, 5, 18, 128])
def test_karras_endpoints_monotone_length(n):
    s = karras_sigmas(n, 0.002, 80.0, 7.0)
    assert s.shape == (n + 1,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0, rel=1e-14) and s[-1].item() == 0.0
    if n > 1:
        assert s[-2].item() == pytest.approx(0.002, rel=1e-12)
    assert (s[:-1] > s[1:]).all()


def test_karras_formula_and_rho_spacing():
    n, lo, hi, rho = 10, 0.01, 100.0, 7.0
    s = karras_sigmas(n, lo, hi, rho)
    for i in range(n):
        expected = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        assert s[i].item() == pytest.approx(expected, rel=1e-13)
    d = s[:-1] ** (1 / rho)
    torch.testing.assert_close(d[1:] - d[:-1], torch.full((n - 1,), (d[1] - d[0]).item(),
                                                          dtype=torch.float64))


@pytest.mark.parametrize("n,frac,split", [(20, 0.25, 1.0), (64, 0.1, 0.5), (10, 0.5, 5.0),
                                          (3, 0.9, 1.0), (40, 0.0, 1.0)])
def test_piecewise_split_fraction(n, frac, split):
    s = piecewise_sigmas(n, 0.002, 80.0, 7.0, split, frac)
    assert s.shape == (n + 1,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    assert s[-1].item() == 0.0 and (s[:-1] > s[1:]).all()
    n_high = min(max(round(frac * n), 1), n - 2)
    above = int((s[1:] >= split * (1 - 1e-12)).sum())  # steps ending at or above the split
    assert above == n_high
    assert s[n_high].item() == pytest.approx(split, rel=1e-12)


def test_piecewise_falls_back_to_karras():
    k = karras_sigmas(12, 0.002, 80.0, 7.0)
    for split in (0.001, 100.0):
        torch.testing.assert_close(piecewise_sigmas(12, 0.002, 80.0, 7.0, split, 0.25), k)
    torch.testing.assert_close(piecewise_sigmas(2, 0.002, 80.0, 7.0, 1.0, 0.25),
                               karras_sigmas(2, 0.002, 80.0, 7.0))


def test_piecewise_spends_steps_at_low_sigma():
    n = 40
    k = karras_sigmas(n, 0.002, 80.0, 7.0)
    p = piecewise_sigmas(n, 0.002, 80.0, 7.0, 1.0, 0.25)
    assert int((p[:-1] < 1.0).sum()) > int((k[:-1] < 1.0).sum())


def test_make_schedule():
    d = DiffusionConfig(sigma_min=0.01, sigma_max=1e5, rho=5.0)
    k = make_schedule(SamplingConfig(steps=16), d)
    torch.testing.assert_close(k, karras_sigmas(16, 0.01, 1e5, 5.0))
    p = make_schedule(SamplingConfig(steps=16, schedule=Schedule.piecewise, piecewise_split=2.0,
                                     piecewise_high_fraction=0.5), d)
    torch.testing.assert_close(p, piecewise_sigmas(16, 0.01, 1e5, 5.0, 2.0, 0.5))
