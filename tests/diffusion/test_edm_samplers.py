"""Samplers with EXACT denoisers of known data distributions.

Two-point data y = ±1 with P(y = +1) = p: D(x; σ) = E[y | x] = tanh(x/σ² + ½·ln(p/(1−p))).
Gaussian data y ~ N(0, s²):                D(x; σ) = x·s²/(s² + σ²).
Initial latents are drawn from the exact marginal at σ_max (y₀ + σ_max·z), so the only error
left is the solvers' discretisation, which must be below the Monte Carlo error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hpcds.config.schema import SamplingConfig, Solver
from hpcds.diffusion.noise import batch_noise, make_noise_fn
from hpcds.diffusion.samplers import dpmpp_2m_sampler, heun_sampler, sample
from hpcds.diffusion.schedules import karras_sigmas

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
B, N, V = 4, 10_000, 2  # 80 000 samples per run
NODES = np.arange(N)

SOLVERS = {
    "heun": lambda D, x, s, nf: heun_sampler(D, x, s),
    "heun_churn": lambda D, x, s, nf: heun_sampler(D, x, s, S_churn=10.0, S_min=0.05,
                                                   S_max=50.0, S_noise=1.0, noise_fn=nf),
    "dpmpp_2m": lambda D, x, s, nf: dpmpp_2m_sampler(D, x, s),
}


def checked(D):
    """Wrap a denoiser: assert it is always called with float64 state and a positive σ."""

    def wrapped(x, sigma):
        assert x.dtype == torch.float64 and torch.as_tensor(sigma).dtype == torch.float64
        assert float(torch.as_tensor(sigma).min()) > 0
        return D(x, sigma)

    return wrapped


def two_point_denoiser(p):
    bias = 0.5 * math.log(p / (1 - p))
    return lambda x, sigma: torch.tanh(x / sigma**2 + bias)


def _initial(seed, y0_fn):
    members = list(range(B))
    noise_fn = make_noise_fn(seed, members, NODES, V)
    uniform = stats.norm.cdf(batch_noise(seed + 1000, members, 0, NODES, V))
    y0 = torch.from_numpy(y0_fn(uniform))
    return y0 + SIGMA_MAX * noise_fn(-1), noise_fn


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("p,steps", [(0.5, 64), (0.3, 128)])
def test_two_point_distribution(solver, p, steps):
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, 7.0)
    latents, noise_fn = _initial(7, lambda u: np.where(u < p, 1.0, -1.0))
    x = SOLVERS[solver](checked(two_point_denoiser(p)), latents, sigmas, noise_fn)
    assert x.dtype == torch.float64 and x.shape == (B, N, V)
    err = (x.abs() - 1).abs().max().item()
    assert err < 1e-3, f"max ||x| - 1| = {err}"
    frac = (x > 0).double().mean().item()
    se = math.sqrt(p * (1 - p) / x.numel())
    assert abs(frac - p) < 4.5 * se, f"P(x > 0) = {frac}, expected {p} ± {se:.2g}"


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_gaussian_variance(solver, s):
    sigmas = karras_sigmas(128, SIGMA_MIN, SIGMA_MAX, 7.0)
    latents, noise_fn = _initial(11, lambda u: s * stats.norm.ppf(u))
    D = lambda x, sigma: x * s**2 / (s**2 + sigma**2)  # noqa: E731
    x = SOLVERS[solver](checked(D), latents, sigmas, noise_fn)
    assert x.dtype == torch.float64
    m = x.numel()
    ratio = x.var().item() / s**2  # (m − 1)·ratio ~ χ²_{m−1}
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], m - 1) / (m - 1)
    assert lo < ratio < hi, f"var/s² = {ratio}, allowed ({lo:.4f}, {hi:.4f})"
    assert abs(x.mean().item()) < 4.5 * s / math.sqrt(m)


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
def test_deterministic_solvers_are_second_order(solver):
    """Gaussian flow: x(0) = x(σ_max)·s/√(s² + σ_max²) exactly; error falls ~4× per doubling."""
    s = 0.5
    D = lambda x, sigma: x * s**2 / (s**2 + sigma**2)  # noqa: E731
    x0 = torch.ones(1, 1, 1, dtype=torch.float64)
    exact = s / math.sqrt(s**2 + SIGMA_MAX**2)
    errors = [abs(SOLVERS[solver](D, x0, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, 7.0), None)
                  .item() / exact - 1) for n in (32, 64, 128, 256)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.8 < q < 2.3 for q in orders), (errors, orders)
    assert errors[-1] < 5e-4


def test_churn_uses_noise_fn_and_is_reproducible():
    sigmas = karras_sigmas(16, SIGMA_MIN, SIGMA_MAX, 7.0)
    D = two_point_denoiser(0.5)
    calls = []
    nf = make_noise_fn(3, [0, 1], np.arange(50), 1)

    def noise_fn(step):
        calls.append(step)
        return nf(step)

    x0 = SIGMA_MAX * nf(-1)
    a = heun_sampler(D, x0, sigmas, S_churn=8.0, S_min=0.01, S_max=10.0, noise_fn=noise_fn)
    b = heun_sampler(D, x0, sigmas, S_churn=8.0, S_min=0.01, S_max=10.0, noise_fn=nf)
    assert torch.equal(a, b)
    in_range = [i for i in range(16) if 0.01 <= sigmas[i].item() <= 10.0]
    assert calls == in_range
    with pytest.raises(ValueError):
        heun_sampler(D, x0, sigmas, S_churn=8.0)


def test_callback_and_config_dispatch():
    sigmas = karras_sigmas(8, SIGMA_MIN, SIGMA_MAX, 7.0)
    D = two_point_denoiser(0.5)
    x0 = SIGMA_MAX * make_noise_fn(0, [0], np.arange(20), 2)(-1)
    for solver, fn in ((Solver.heun, heun_sampler), (Solver.dpmpp_2m, dpmpp_2m_sampler)):
        seen = []
        out = sample(SamplingConfig(solver=solver), D, x0, sigmas, callback=seen.append)
        assert [c["i"] for c in seen] == list(range(8)) and seen[-1]["n"] == 8
        assert torch.equal(out, fn(D, x0, sigmas)) and out.dtype == torch.float64


def test_float32_latents_are_promoted():
    sigmas = karras_sigmas(4, SIGMA_MIN, SIGMA_MAX, 7.0)
    D = checked(lambda x, sigma: x / (1 + sigma**2))
    x0 = torch.randn(2, 3, 1, generator=torch.Generator().manual_seed(0))
    assert heun_sampler(D, x0, sigmas).dtype == torch.float64
    assert dpmpp_2m_sampler(D, x0, sigmas).dtype == torch.float64


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_end_to_end_through_precond(solver):
    """EDMPrecond with F = 0 is the exact denoiser of N(0, σ_d²) (D = c_skip·x): sampling
    through `as_denoiser` (float32 backbone, float64 state) recovers the variance σ_d²."""
    from torch import nn

    from hpcds.diffusion.precond import EDMPrecond

    class ZeroF(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x_in, cond, forcings, c_noise):
            assert x_in.dtype == torch.float32 and c_noise.shape == (x_in.shape[0],)
            return self.w * x_in

    sd = 0.6
    net = EDMPrecond(ZeroF(), sigma_data=sd)
    denoiser = checked(net.as_denoiser(torch.zeros(B, N, V), torch.zeros(B, N, 3)))
    sigmas = karras_sigmas(128, SIGMA_MIN, SIGMA_MAX, 7.0)
    latents, noise_fn = _initial(5, lambda u: sd * stats.norm.ppf(u))
    x = SOLVERS[solver](denoiser, latents, sigmas, noise_fn)
    assert x.dtype == torch.float64
    ratio, m = x.var().item() / sd**2, x.numel()
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], m - 1) / (m - 1)
    assert lo < ratio < hi, ratio


def heun_variance_recursion(s, sigmas, S_churn, S_min, S_max, v0):
    """Exact output variance of Algorithm 2 on Gaussian data (every stage is linear in x):
    churn v̂ = v + σ̂² − σ²; Euler x' = A·x̂, A = 1 + (σ' − σ̂)(1 − k̂)/σ̂, k = s²/(s² + σ²);
    Heun x_next = C·x̂, C = 1 + (σ' − σ̂)/2·((1 − k̂)/σ̂ + A(1 − k')/σ')."""
    n, v = len(sigmas) - 1, v0
    gamma_max = min(S_churn / n, math.sqrt(2) - 1)
    k = lambda g: s * s / (s * s + g * g)  # noqa: E731
    for i in range(n):
        sc, sn = float(sigmas[i]), float(sigmas[i + 1])
        sh = sc * (1 + (gamma_max if S_min <= sc <= S_max else 0.0))
        v = v + sh * sh - sc * sc
        A = 1 + (sn - sh) * (1 - k(sh)) / sh
        C = 1 + (sn - sh) / 2 * ((1 - k(sh)) / sh + A * (1 - k(sn)) / sn) if i < n - 1 else A
        v = C * C * v
    return v


@pytest.mark.parametrize("steps,S_churn", [(32, 40.0), (32, 0.0), (64, 10.0)])
def test_churn_matches_exact_variance_recursion(steps, S_churn):
    """At few steps the stochastic sampler's variance is biased (10 % at 32 steps, γ = √2 − 1):
    the Monte Carlo variance must match the exact bias of Algorithm 2, not just be near s²;
    and the bias vanishes at second order as the steps double."""
    s = 0.5
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, 7.0)
    latents, noise_fn = _initial(13, lambda u: s * stats.norm.ppf(u))
    D = lambda x, sigma: x * s**2 / (s**2 + sigma**2)  # noqa: E731
    x = heun_sampler(D, latents, sigmas, S_churn=S_churn, S_min=0.05, S_max=50.0,
                     noise_fn=noise_fn)
    expected = heun_variance_recursion(s, sigmas, S_churn, 0.05, 50.0, s**2 + SIGMA_MAX**2)
    m = x.numel()
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], m - 1) / (m - 1)
    assert lo < x.var().item() / expected < hi, (x.var().item() / s**2, expected / s**2)
    bias = [heun_variance_recursion(s, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, 7.0), S_churn,
                                    0.05, 50.0, s**2 + SIGMA_MAX**2) / s**2 - 1
            for n in (128, 256, 512)]
    assert all(3.5 < a / b < 5.0 for a, b in zip(bias, bias[1:])), bias
