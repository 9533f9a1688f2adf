"""EDM loss against closed forms: λ(σ), the optimum's expected loss, area/variable weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hpcds.config.schema import DiffusionConfig, SigmaRegime
from hpcds.diffusion.loss import EDMLoss, RegressionLoss, edm_loss_weight, make_loss
from hpcds.diffusion.precond import EDMPrecond
from hpcds.diffusion.sigma import KarrasUniformSigma, LogNormalSigma


class ZeroF(nn.Module):
    def forward(self, x_in, cond, forcings, c_noise):
        return torch.zeros_like(x_in)


class GaussianOptimumF(nn.Module):
    """The F that makes EDMPrecond the exact denoiser of y ~ N(0, s²): D* = x·s²/(s²+σ²).

    σ = exp(4·c_noise), x = x_in / c_in, F = (D* − c_skip·x) / c_out.
    """

    def __init__(self, s, sigma_data):
        super().__init__()
        self.s, self.sd = s, sigma_data

    def forward(self, x_in, cond, forcings, c_noise):
        sigma = torch.exp(4 * c_noise.double())[:, None, None]
        s2, sd2 = self.s**2, self.sd**2
        x = x_in.double() * (sigma**2 + sd2).sqrt()
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sd / (sigma**2 + sd2).sqrt()
        return ((x * s2 / (s2 + sigma**2) - c_skip * x) / c_out).to(x_in.dtype)


def _data(B, N, V, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = s * torch.randn(B, N, V, generator=g)
    return y, torch.zeros(B, N, V), torch.zeros(B, N, 1), g


@pytest.mark.parametrize("sigma", [0.002, 0.3, 1.0, 80.0])
def test_lambda_formula(sigma):
    sd = 0.5
    lam = edm_loss_weight(torch.tensor(sigma, dtype=torch.float64), sd).item()
    assert lam == pytest.approx((sigma**2 + sd**2) / (sigma * sd) ** 2, rel=1e-14)
    c_out = sigma * sd / math.sqrt(sigma**2 + sd**2)
    assert lam == pytest.approx(1 / c_out**2, rel=1e-12)


@pytest.mark.parametrize("s,sigma_data", [(1.0, 1.0), (0.5, 1.0), (2.0, 0.5)])
@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0, 20.0])
def test_optimal_denoiser_loss_at_fixed_sigma(s, sigma_data, sigma):
    """E[λ(σ)(D* − y)²] = λ(σ)·s²σ²/(s²+σ²), Monte Carlo within 5 standard errors."""
    F = ZeroF() if s == sigma_data else GaussianOptimumF(s, sigma_data)
    net = EDMPrecond(F, sigma_data)
    loss = EDMLoss(LogNormalSigma(), sigma_data)
    B, N, V = 64, 256, 2
    y, cond, forcings, g = _data(B, N, V, s)
    out = loss(net, y, cond, forcings, generator=g, sigma=torch.full((B,), sigma))
    expected = edm_loss_weight(torch.tensor(sigma, dtype=torch.float64), sigma_data).item() \
        * s**2 * sigma**2 / (s**2 + sigma**2)
    # per element λ(D*−y)² = expected·χ²₁: variance 2·expected² per element
    se = expected * math.sqrt(2 / (B * N * V))
    assert abs(out.loss.item() - expected) < 5 * se
    assert out.per_sample.shape == (B,) and torch.equal(out.sigma, torch.full((B,), sigma))


def test_optimal_denoiser_loss_with_sampled_sigma():
    """With σ ~ p(σ) and s = σ_d the optimum's expected loss is 1 at every σ."""
    s = sd = 1.0
    for sampler in (LogNormalSigma(-1.2, 1.2), KarrasUniformSigma(0.002, 1e5, 7.0)):
        loss = EDMLoss(sampler, sd)
        y, cond, forcings, g = _data(256, 64, 2, s, seed=3)
        out = loss(EDMPrecond(ZeroF(), sd), y, cond, forcings, generator=g)
        assert out.sigma.shape == (256,) and out.sigma.unique().numel() > 200
        se = math.sqrt(2 / y.numel())
        assert abs(out.loss.item() - 1.0) < 5 * se
        # per sample: mean of 128 λ·err² ~ χ²₁₂₈/128, whatever the sample's σ
        assert abs(out.per_sample.mean().item() - 1.0) < 5 * se


def test_area_and_variable_weights_single_error():
    """Error e only at (node k, variable j): per-sample loss = λ(σ)·ã_k·w̃_j·e² / (N·V)."""
    B, N, V, sd = 2, 7, 3, 0.8
    area = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    var_w = [1.0, 0.5, 4.0]
    k, j, e = 4, 2, 0.3

    def net(x_noisy, sigma, cond, forcings):
        out = torch.zeros_like(x_noisy)
        out[:, k, j] = e
        return out

    loss = EDMLoss(LogNormalSigma(), sd, area_weights=area, variable_weights=var_w)
    sigma = torch.tensor([0.1, 3.0])
    out = loss(net, torch.zeros(B, N, V), torch.zeros(B, N, V), torch.zeros(B, N, 1),
               sigma=sigma)
    a_k = area[k] / area.mean()
    w_j = var_w[j] / (sum(var_w) / V)
    expected = edm_loss_weight(sigma, sd) * a_k * w_j * e**2 / (N * V)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())


def test_uniform_weights_equal_plain_mse_and_shards_sum_to_full():
    B, N, V = 3, 10, 2
    g = torch.Generator().manual_seed(1)
    y, pred = torch.randn(B, N, V, generator=g), torch.randn(B, N, V, generator=g)
    net = lambda x, sigma, cond, forcings: pred  # noqa: E731
    sigma = torch.tensor([0.5, 1.0, 2.0])
    plain = EDMLoss(LogNormalSigma(), 1.0)(net, y, y, y, sigma=sigma)
    torch.testing.assert_close(plain.per_sample,
                               edm_loss_weight(sigma, 1.0) * ((pred - y) ** 2).mean((1, 2)))
    area = torch.rand(N, generator=g) + 0.1
    full = EDMLoss(LogNormalSigma(), 1.0, area_weights=area)
    whole = full(net, y, y, y, sigma=sigma).per_sample
    parts = sum(full(lambda x, s, c, f, a=a, b=b: pred[:, a:b], y[:, a:b], y[:, a:b], y[:, a:b],
                     sigma=sigma, nodes=slice(a, b)).per_sample
                for a, b in ((0, 3), (3, 4), (4, 10)))
    torch.testing.assert_close(parts, whole)
    idx = torch.tensor([7, 2, 5])  # global indices in any order
    part = full(lambda x, s, c, f: pred[:, idx], y[:, idx], y[:, idx], y[:, idx], sigma=sigma,
                nodes=idx).per_sample
    expected = edm_loss_weight(sigma, 1.0) * ((pred - y)[:, idx] ** 2).sum(2).mul(
        area[idx] / area.mean()).sum(1) / (N * V)
    torch.testing.assert_close(part, expected)


def test_regression_loss_weighted_mse():
    B, N, V = 2, 4, 2
    g = torch.Generator().manual_seed(2)
    y, cond = torch.randn(B, N, V, generator=g), torch.randn(B, N, V, generator=g)

    class Identity(nn.Module):
        def forward(self, x_in, cond, forcings, c_noise):
            return cond

    net = EDMPrecond(Identity(), sigma_data=1.0, deterministic=True)
    area = torch.tensor([1.0, 1.0, 2.0, 4.0])
    out = RegressionLoss(area_weights=area, variable_weights=[1.0, 3.0])(
        net, y, cond, torch.zeros(B, N, 1))
    w = (area / area.mean())[:, None] * torch.tensor([0.5, 1.5])
    torch.testing.assert_close(out.per_sample, (w * (cond - y) ** 2).mean((1, 2)))
    assert out.sigma is None


def test_make_loss_from_config():
    cfg = DiffusionConfig(regime=SigmaRegime.karras_uniform, sigma_max=1e5)
    loss = make_loss(cfg)
    assert isinstance(loss, EDMLoss) and isinstance(loss.sigma_sampler, KarrasUniformSigma)
    assert isinstance(make_loss(DiffusionConfig(deterministic=True)), RegressionLoss)


def test_gradients_reach_the_backbone():
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x_in, cond, forcings, c_noise):
            return self.lin(x_in + cond) * c_noise[:, None, None]

    net = EDMPrecond(Linear(), 1.0)
    y, cond, forcings, g = _data(4, 8, 2, 1.0)
    out = EDMLoss(LogNormalSigma(), 1.0)(net, y, cond, forcings, generator=g)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert out.loss.dtype == torch.float32
