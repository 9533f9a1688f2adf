"""Training noise-level distributions p_train(σ).

LogNormalSigma (EDM, Karras et al. 2022 §5):   ln σ ~ N(P_mean, P_std²).
KarrasUniformSigma (high-noise fine-tuning):    σ = (σ_max^{1/ρ} + u·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,
    u ~ U(0, 1): σ uniform along the sampler's Karras ramp, so every sampling step's σ is
    trained as often as every other; σ_max may be as large as 1e5 (the regime where the
    sample's large scales are decided).

Each has `sample(batch, generator=None, device=None) -> σ (B,) float32`; the draw is made on
the generator's device (CPU when none is given) and moved to `device`, so a fixed CPU
generator gives the same σ whatever the device. The ramp is computed in float64.
"""

from __future__ import annotations

from typing import Optional

import torch

from hpcds.config.schema import DiffusionConfig, SigmaRegime


def _draw_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class LogNormalSigma:
    """ln σ ~ N(P_mean, P_std²)."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2):
        if not P_std > 0:
            raise ValueError(f"P_std must be > 0, got {P_std}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)

    def sample(self, batch: int, generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """σ (batch,) float32."""
        rnd_normal = torch.randn(batch, generator=generator, dtype=torch.float64,
                                 device=_draw_device(generator))
        sigma = (rnd_normal * self.P_std + self.P_mean).exp()
        return sigma.to(device=device or sigma.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"LogNormalSigma(P_mean={self.P_mean}, P_std={self.P_std})"


class KarrasUniformSigma:
    """σ^{1/ρ} ~ U[σ_max^{1/ρ}, σ_min^{1/ρ}] (the Karras ramp traversed uniformly)."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)

    def sample(self, batch: int, generator: Optional[torch.Generator] = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """σ (batch,) float32 in [σ_min, σ_max]."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64,
                       device=_draw_device(generator))
        hi = self.sigma_max ** (1.0 / self.rho)
        lo = self.sigma_min ** (1.0 / self.rho)
        sigma = (hi + u * (lo - hi)) ** self.rho
        return sigma.to(device=device or sigma.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return (f"KarrasUniformSigma(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, "
                f"rho={self.rho})")


def make_sigma_sampler(cfg: DiffusionConfig):
    """The σ distribution named by `cfg.regime`."""
    if cfg.regime == SigmaRegime.lognormal:
        return LogNormalSigma(cfg.P_mean, cfg.P_std)
    if cfg.regime == SigmaRegime.karras_uniform:
        return KarrasUniformSigma(cfg.sigma_min, cfg.sigma_max, cfg.rho)
    raise ValueError(f"unknown sigma regime {cfg.regime!r}: expected one of "
                     f"{[r.value for r in SigmaRegime]}")
