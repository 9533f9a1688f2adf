"""EDM preconditioning (Karras et al. 2022, Table 1 and §5): D(x; σ) from the raw network F_θ.

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x, cond, forcings, c_noise(σ))
(with `model.skip_filter`, x in the skip term is S_σ(x), the backbone's learned local linear
filter `filter_skip(x, σ, c_noise)`: hpcds/nn/skip_filter.py)
    c_skip = σ_d² / (σ² + σ_d²)      c_out = σ·σ_d / √(σ² + σ_d²)
    c_in   = 1 / √(σ² + σ_d²)        c_noise = ln(σ) / 4

Shapes: x (B, N, V), σ (B,) or a scalar (broadcast to B), cond (B, N, V), forcings (B, N, F);
the backbone is called as F(x_in (B, N, V), cond (B, N, V), forcings (B, N, F), c_noise (B,))
→ (B, N, V) (`hpcds.models.downscaler.DownscalerNet`). σ must be > 0 (c_noise = ln σ / 4).

Precision: the coefficient math runs in float32, or in float64 when x is float64 (the
samplers' state); F sees its inputs in the backbone's parameter dtype (autocast may lower it
further on GPU) and its output is cast back, so D returns float64 for float64 x and float32
otherwise.

Deterministic (debug) mode, `deterministic=True`: the same network as a regression of the
conditional mean, D(cond) = σ_d·F_θ(0, cond, forcings, c_noise = DETERMINISTIC_C_NOISE),
trained with plain (area/variable-weighted) MSE (`loss.RegressionLoss`). x and σ are ignored
(they may be None). Choices: x_in = 0 so the network sees no noisy state; c_noise = 0, i.e.
the embedding of σ = 1 = σ_d, a value well inside the range seen by diffusion training so a
fine-tune from a regression checkpoint starts from a sensible embedding; the σ_d factor keeps F's
output at unit scale for targets of standard deviation σ_d, as c_out does in EDM. A sampler
run on this D returns D(cond) exactly (dx/dσ = (x − D)/σ with D constant ends at D).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

DETERMINISTIC_C_NOISE = 0.0


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of σ, elementwise, in σ's dtype (any shape)."""
    sd2 = sigma_data * sigma_data
    s2 = sigma * sigma
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1.0 / (s2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def _param_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class EDMPrecond(nn.Module):
    """D(x; σ, cond, forcings) around a backbone F_θ; `deterministic` for the regression mode."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 1.0,
                 deterministic: bool = False):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)
        self.deterministic = bool(deterministic)

    def forward(self, x_noisy: Optional[torch.Tensor], sigma: Optional[torch.Tensor],
                cond: torch.Tensor, forcings: torch.Tensor) -> torch.Tensor:
        """x_noisy (B, N, V), σ (B,) or scalar, cond (B, N, V), forcings (B, N, F) → (B, N, V)."""
        if self.deterministic:
            return self.regress(cond, forcings)
        if x_noisy is None or sigma is None:
            raise ValueError("the diffusion denoiser needs x_noisy and sigma")
        calc = torch.float64 if x_noisy.dtype == torch.float64 else torch.float32
        B = x_noisy.shape[0]
        sigma = torch.as_tensor(sigma, device=x_noisy.device).to(calc)
        if sigma.ndim == 0:
            sigma = sigma.expand(B)
        if sigma.shape != (B,):
            raise ValueError(f"sigma must be a scalar or ({B},), got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        x = x_noisy.to(calc)
        net = _param_dtype(self.backbone)
        F_x = self.backbone((c_in[:, None, None] * x).to(net), cond.to(net),
                            forcings.to(net), c_noise.to(net))
        # the backbone's local skip filter S_σ (hpcds/nn/skip_filter.py), if it has one
        filter_skip = getattr(self.backbone, "filter_skip", None)
        x_skip = x if filter_skip is None else filter_skip(x, sigma, c_noise.to(net))
        return c_skip[:, None, None] * x_skip + c_out[:, None, None] * F_x.to(calc)

    def regress(self, cond: torch.Tensor, forcings: torch.Tensor) -> torch.Tensor:
        """Deterministic mode: σ_d·F(0, cond, forcings, c_noise = const) → (B, N, V) float32."""
        net = _param_dtype(self.backbone)
        cond_n = cond.to(net)
        c_noise = torch.full((cond.shape[0],), DETERMINISTIC_C_NOISE, dtype=net,
                             device=cond.device)
        F_x = self.backbone(torch.zeros_like(cond_n), cond_n, forcings.to(net), c_noise)
        return self.sigma_data * F_x.to(torch.float32)

    def as_denoiser(self, cond: torch.Tensor, forcings: torch.Tensor
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The samplers' `denoiser(x (B, N, V) float64, σ scalar or (B,)) → (B, N, V) float64`
        for fixed cond / forcings, without autograd."""

        @torch.no_grad()
        def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self(x, sigma, cond, forcings).to(x.dtype)

        return denoiser
