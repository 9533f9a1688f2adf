"""EDM preconditioning against the closed forms of Karras et al. 2022, Table 1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hpcds.diffusion.precond import DETERMINISTIC_C_NOISE, EDMPrecond, edm_coefficients

SIGMA_DATA = 0.7


class Recorder(nn.Module):
    """F that records its inputs and returns a fixed function of them."""

    def __init__(self, out: str = "zero"):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))  # float32 parameter: the backbone dtype
        self.out = out
        self.calls = []

    def forward(self, x_in, cond, forcings, c_noise):
        self.calls.append(dict(x_in=x_in, cond=cond, forcings=forcings, c_noise=c_noise))
        if self.out == "zero":
            return torch.zeros_like(x_in)
        return self.w * (x_in + 2 * cond + forcings.sum(-1, keepdim=True) + c_noise[:, None, None])


def _inputs(B=3, N=5, V=2, F=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, V, generator=g, dtype=dtype),
            torch.randn(B, N, V, generator=g), torch.randn(B, N, F, generator=g))


@pytest.mark.parametrize("sigma", [1e-6, 0.002, 0.1, SIGMA_DATA, 1.0, 80.0, 1e5])
def test_coefficients_match_formulas(sigma):
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(s, SIGMA_DATA)
    sd = SIGMA_DATA
    assert c_skip.item() == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-14)
    assert c_out.item() == pytest.approx(sigma * sd / math.sqrt(sigma**2 + sd**2), rel=1e-14)
    assert c_in.item() == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-14)
    assert c_noise.item() == pytest.approx(math.log(sigma) / 4, rel=1e-14)
    # identity: c_out² = σ²σ_d²/(σ² + σ_d²) = σ_d²·(1 − c_skip)
    assert c_out.item() ** 2 == pytest.approx(sd**2 * (1 - c_skip.item()), rel=1e-12)


def test_coefficient_limits():
    c_skip, c_out, c_in, _ = edm_coefficients(torch.tensor([1e-12], dtype=torch.float64), 1.3)
    assert c_skip.item() == pytest.approx(1.0, abs=1e-15) and c_out.item() < 1e-11
    assert c_in.item() == pytest.approx(1 / 1.3)
    c_skip, c_out, c_in, _ = edm_coefficients(torch.tensor([1.3], dtype=torch.float64), 1.3)
    assert c_skip.item() == pytest.approx(0.5, rel=1e-15)
    assert c_out.item() == pytest.approx(1.3 / math.sqrt(2), rel=1e-15)
    c_skip, c_out, _, _ = edm_coefficients(torch.tensor([1e8], dtype=torch.float64), 1.3)
    assert c_skip.item() < 1e-15 and c_out.item() == pytest.approx(1.3, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_backbone_gives_c_skip_x_exactly(dtype):
    x, cond, forcings = _inputs(dtype=dtype)
    sigma = torch.tensor([0.01, SIGMA_DATA, 50.0], dtype=dtype)
    D = EDMPrecond(Recorder("zero"), SIGMA_DATA)(x, sigma, cond, forcings)
    c_skip = edm_coefficients(sigma, SIGMA_DATA)[0]
    assert D.dtype == dtype
    assert torch.equal(D, c_skip[:, None, None] * x)


def test_backbone_sees_preconditioned_inputs_and_float64_round_trip():
    x, cond, forcings = _inputs(dtype=torch.float64)
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    F = Recorder("affine")
    D = EDMPrecond(F, SIGMA_DATA)(x, sigma, cond, forcings)
    call = F.calls[-1]
    # the backbone gets its own dtype (float32); the state stays float64
    assert all(call[k].dtype == torch.float32 for k in call)
    assert D.dtype == torch.float64
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, SIGMA_DATA)
    torch.testing.assert_close(call["x_in"], (c_in[:, None, None] * x).float())
    torch.testing.assert_close(call["c_noise"], (sigma.log() / 4).float())
    F_ref = (call["x_in"] + 2 * call["cond"] + call["forcings"].sum(-1, keepdim=True)
             + call["c_noise"][:, None, None]).double()
    torch.testing.assert_close(D, c_skip[:, None, None] * x + c_out[:, None, None] * F_ref)


def test_scalar_sigma_broadcasts_and_bad_shape_fails():
    x, cond, forcings = _inputs()
    net = EDMPrecond(Recorder("affine"), SIGMA_DATA)
    D1 = net(x, torch.tensor(0.3), cond, forcings)
    D2 = net(x, torch.full((3,), 0.3), cond, forcings)
    torch.testing.assert_close(D1, D2, rtol=0, atol=0)
    with pytest.raises(ValueError):
        net(x, torch.ones(2), cond, forcings)


def test_as_denoiser_float64_no_grad():
    x, cond, forcings = _inputs(dtype=torch.float64)
    net = EDMPrecond(Recorder("affine"), SIGMA_DATA)
    out = net.as_denoiser(cond, forcings)(x, torch.tensor(2.0, dtype=torch.float64))
    assert out.dtype == torch.float64 and not out.requires_grad and out.shape == x.shape


def test_deterministic_mode_is_regression_of_cond():
    x, cond, forcings = _inputs()
    F = Recorder("affine")
    net = EDMPrecond(F, SIGMA_DATA, deterministic=True)
    D_a = net(x, torch.full((3,), 5.0), cond, forcings)
    D_b = net(None, None, cond, forcings)
    torch.testing.assert_close(D_a, D_b, rtol=0, atol=0)  # x and σ are ignored
    call = F.calls[-1]
    assert torch.equal(call["x_in"], torch.zeros_like(cond))
    assert torch.equal(call["c_noise"], torch.full((3,), DETERMINISTIC_C_NOISE))
    expected = SIGMA_DATA * (2 * cond + forcings.sum(-1, keepdim=True) + DETERMINISTIC_C_NOISE)
    torch.testing.assert_close(D_b, expected)
