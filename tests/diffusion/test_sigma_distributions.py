"""Training σ distributions by their moments and a KS test of the Karras ramp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hpcds.config.schema import DiffusionConfig, SigmaRegime
from hpcds.diffusion.sigma import KarrasUniformSigma, LogNormalSigma, make_sigma_sampler

M = 200_000


@pytest.mark.parametrize("P_mean,P_std", [(-1.2, 1.2), (0.5, 2.0)])
def test_lognormal_moments(P_mean, P_std):
    sigma = LogNormalSigma(P_mean, P_std).sample(M, torch.Generator().manual_seed(0))
    assert sigma.shape == (M,) and sigma.dtype == torch.float32 and (sigma > 0).all()
    ln = sigma.double().log().numpy()
    assert abs(ln.mean() - P_mean) < 5 * P_std / math.sqrt(M)
    # var of the sample variance of a normal: 2σ⁴/(M−1)
    assert abs(ln.var(ddof=1) - P_std**2) < 5 * P_std**2 * math.sqrt(2 / (M - 1))
    assert stats.kstest((ln - P_mean) / P_std, "norm").pvalue > 1e-3


@pytest.mark.parametrize("sigma_min,sigma_max,rho", [(0.002, 80.0, 7.0), (0.002, 1e5, 7.0),
                                                     (0.02, 1e3, 3.0)])
def test_karras_uniform_ramp_and_range(sigma_min, sigma_max, rho):
    sampler = KarrasUniformSigma(sigma_min, sigma_max, rho)
    sigma = sampler.sample(M, torch.Generator().manual_seed(1)).double().numpy()
    assert sigma.min() >= sigma_min * (1 - 1e-6) and sigma.max() <= sigma_max * (1 + 1e-6)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    u = (sigma ** (1 / rho) - hi) / (lo - hi)  # uniform on [0, 1]
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # both ends are reached: the top and bottom 0.1 % of the ramp are populated
    assert (u < 1e-3).any() and (u > 1 - 1e-3).any()
    assert sigma.max() > 0.9 * sigma_max and sigma.min() < 1.1 * sigma_min


def test_generator_reproducible_and_device_argument():
    s = LogNormalSigma()
    a = s.sample(10, torch.Generator().manual_seed(5), device="cpu")
    b = s.sample(10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, s.sample(10, torch.Generator().manual_seed(6)))


def test_make_sigma_sampler():
    a = make_sigma_sampler(DiffusionConfig(P_mean=0.3, P_std=0.9))
    assert isinstance(a, LogNormalSigma) and (a.P_mean, a.P_std) == (0.3, 0.9)
    b = make_sigma_sampler(DiffusionConfig(regime=SigmaRegime.karras_uniform, sigma_max=1e5))
    assert isinstance(b, KarrasUniformSigma) and b.sigma_max == 1e5
    with pytest.raises(ValueError):
        KarrasUniformSigma(1.0, 0.5)
    assert np.isfinite(b.sample(4).numpy()).all()
