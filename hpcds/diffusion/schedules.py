"""Sampling noise-level schedules σ_0 > σ_1 > … > σ_{n−1} > σ_n = 0 (n solver steps).

Karras et al. 2022, eq. 5:
    σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,  i = 0 … n−1,   σ_n = 0.
Piecewise: two Karras ramps joined at σ = split. The first n_high = round(high_fraction·n)
steps go σ_max → split (fast through high noise); the remaining n − n_high steps go
split → σ_min (n − n_high − 1 steps) and then σ_min → 0, so most of the work is spent where
the fine scales form. A split outside (σ_min, σ_max), or too few steps to give each part
one, falls back to the plain Karras ramp. n_high is clamped to [1, n − 2].

All schedules are float64 tensors (n + 1,), strictly decreasing, ending with 0.
"""

from __future__ import annotations

import torch

from hpcds.config.schema import DiffusionConfig, SamplingConfig, Schedule


def _ramp(n_points: int, sigma_hi: float, sigma_lo: float, rho: float) -> torch.Tensor:
    """n_points ≥ 2 values from sigma_hi to sigma_lo (both included), ρ-spaced."""
    i = torch.arange(n_points, dtype=torch.float64)
    hi, lo = sigma_hi ** (1.0 / rho), sigma_lo ** (1.0 / rho)
    return (hi + i / (n_points - 1) * (lo - hi)) ** rho


def _check(n: int, sigma_min: float, sigma_max: float, rho: float) -> None:
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0
                  ) -> torch.Tensor:
    """(n + 1,) float64: the Karras ramp σ_max … σ_min, then 0. n = 1 gives [σ_max, 0]."""
    _check(n, sigma_min, sigma_max, rho)
    zero = torch.zeros(1, dtype=torch.float64)
    if n == 1:
        return torch.cat([torch.tensor([float(sigma_max)], dtype=torch.float64), zero])
    return torch.cat([_ramp(n, sigma_max, sigma_min, rho), zero])


def piecewise_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float, split: float,
                     high_fraction: float) -> torch.Tensor:
    """(n + 1,) float64: round(high_fraction·n) steps in [split, σ_max], the rest below split."""
    _check(n, sigma_min, sigma_max, rho)
    if not 0 <= high_fraction <= 1:
        raise ValueError(f"high_fraction must lie in [0, 1], got {high_fraction}")
    if not sigma_min < split < sigma_max or n < 3:
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    n_high = min(max(round(high_fraction * n), 1), n - 2)
    high = _ramp(n_high + 1, sigma_max, split, rho)  # σ_0 = σ_max … σ_{n_high} = split
    low = _ramp(n - n_high, split, sigma_min, rho)  # split … σ_{n-1} = σ_min
    return torch.cat([high, low[1:], torch.zeros(1, dtype=torch.float64)])


def make_schedule(cfg: SamplingConfig, diffusion_cfg: DiffusionConfig) -> torch.Tensor:
    """The schedule named by `cfg.schedule` with `cfg.steps` steps and σ range / ρ from
    `diffusion_cfg`."""
    d = diffusion_cfg
    if cfg.schedule == Schedule.karras:
        return karras_sigmas(cfg.steps, d.sigma_min, d.sigma_max, d.rho)
    if cfg.schedule == Schedule.piecewise:
        return piecewise_sigmas(cfg.steps, d.sigma_min, d.sigma_max, d.rho,
                                cfg.piecewise_split, cfg.piecewise_high_fraction)
    raise ValueError(f"unknown schedule {cfg.schedule!r}: expected one of "
                     f"{[s.value for s in Schedule]}")
