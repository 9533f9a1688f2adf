"""Training losses: EDM denoising score matching and the deterministic regression.

EDM (Karras et al. 2022, eq. 8 with the §5 choices):
    σ ~ p_train(σ),  n ~ N(0, σ² I),  L = E[ λ(σ) · ‖D(y + n; σ) − y‖²_w ],
    λ(σ) = (σ² + σ_d²) / (σ·σ_d)²   (= 1 / c_out², so the network's own target has unit weight)
with the weighted squared norm  ‖e‖²_w = (1 / (N·V)) Σ_{n,v} a_n · w_v · e_{n,v}²,
a (N,) the area weights and w (V,) the variable weights, each normalised to mean 1 (so with
unit weights this is the plain mean squared error). Per-sample losses (B,) and σ (B,) are
returned with the batch mean (the trainer bins validation losses by σ).

For the exact denoiser of y ~ N(0, s²) iid, D*(x; σ) = x·s²/(s² + σ²), the expected
per-sample loss at σ is λ(σ)·s²σ²/(s² + σ²) (= 1 when s = σ_d).

Sharded nodes: build the loss with the GLOBAL area weights (N_global,) and pass `nodes` (the
shard's slice or global indices) at each call; the per-sample loss is then the shard's part
Σ_{n∈shard} … / (N_global·V), and the sum over the model-parallel shards (an all-reduce the
trainer does; the loss calls no collectives) is the full loss. σ and the unit noise must be
the same on every shard of a sample: pass `sigma` and `noise` (e.g. from
`hpcds.diffusion.noise`) or a generator seeded alike on all ranks of the model-parallel group.

Loss math in float32. `net(x_noisy, σ, cond, forcings)` is an `EDMPrecond` (or any callable
with its signature); shapes y, cond (B, N, V), forcings (B, N, F).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from hpcds.config.schema import DiffusionConfig
from hpcds.diffusion.sigma import make_sigma_sampler

Nodes = Optional[slice | torch.Tensor]


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²) / (σ·σ_d)², elementwise."""
    return (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data) ** 2


def _normalised(w, name: str) -> Optional[torch.Tensor]:
    if w is None:
        return None
    if not isinstance(w, torch.Tensor):  # a read-only (memory-mapped) array: copy here
        w = np.array(w, dtype=np.float32)
    w = torch.as_tensor(w, dtype=torch.float32).flatten()
    if w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all zero")
    return w / w.mean()


@dataclass
class LossOutput:
    loss: torch.Tensor  # () mean over the batch of `per_sample`
    per_sample: torch.Tensor  # (B,)
    sigma: Optional[torch.Tensor]  # (B,) the noise levels used; None for the regression


class _WeightedMSE:
    """(1/(N_global·V)) Σ a_n w_v e² per sample, with shard support (see module docstring)."""

    def __init__(self, area_weights=None, variable_weights=None):
        self.area_weights = _normalised(area_weights, "area_weights")  # (N_global,)
        self.variable_weights = _normalised(variable_weights, "variable_weights")  # (V,)
        self._on_device: dict = {}  # (name, device) -> weights moved there once

    def _weights(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, name).to(device)
        return self._on_device[key]

    def weighted_mean_sq(self, err: torch.Tensor, nodes: Nodes = None) -> torch.Tensor:
        """err (B, N, V) float32 → (B,)."""
        B, N, V = err.shape
        sq = err.square()
        if self.variable_weights is not None:
            if self.variable_weights.numel() != V:
                raise ValueError(f"{self.variable_weights.numel()} variable weights for {V} "
                                 "variables")
            sq = sq * self._weights("variable_weights", err.device)
        if self.area_weights is None:
            if nodes is not None:
                raise ValueError("sharded loss (nodes given) needs the global area_weights")
            return sq.mean(dim=(1, 2))
        a = self._weights("area_weights", err.device)
        if nodes is not None:
            a = a[nodes.to(err.device) if isinstance(nodes, torch.Tensor) else nodes]
        if a.numel() != N:
            raise ValueError(f"{a.numel()} area weights for {N} nodes")
        n_global = self.area_weights.numel()
        return (sq.sum(dim=2) * a).sum(dim=1) / (n_global * V)


class EDMLoss(_WeightedMSE):
    """λ(σ)·‖D(y + n; σ) − y‖²_w with σ ~ `sigma_sampler`."""

    def __init__(self, sigma_sampler, sigma_data: float = 1.0,
                 area_weights: Optional[Sequence[float] | torch.Tensor] = None,
                 variable_weights: Optional[Sequence[float] | torch.Tensor] = None):
        super().__init__(area_weights, variable_weights)
        self.sigma_sampler = sigma_sampler
        self.sigma_data = float(sigma_data)

    def __call__(self, net, y: torch.Tensor, cond: torch.Tensor, forcings: torch.Tensor, *,
                 generator: Optional[torch.Generator] = None,
                 sigma: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                 nodes: Nodes = None) -> LossOutput:
        """y, cond (B, N, V); forcings (B, N, F); optional σ (B,) and unit noise (B, N, V)
        override the draws; `nodes` selects this shard's rows of the global area weights."""
        B = y.shape[0]
        y = y.to(torch.float32)
        if sigma is None:
            sigma = self.sigma_sampler.sample(B, generator=generator, device=y.device)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=y.device).expand(B)
        if noise is None:
            noise = torch.randn(y.shape, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else y.device)
        n = noise.to(device=y.device, dtype=torch.float32) * sigma[:, None, None]
        D_yn = net(y + n, sigma, cond, forcings).to(torch.float32)
        per_sample = edm_loss_weight(sigma, self.sigma_data) * self.weighted_mean_sq(
            D_yn - y, nodes)
        return LossOutput(per_sample.mean(), per_sample, sigma)


class RegressionLoss(_WeightedMSE):
    """Deterministic mode: ‖D(cond) − y‖²_w, D = `EDMPrecond(..., deterministic=True)`."""

    def __call__(self, net, y: torch.Tensor, cond: torch.Tensor, forcings: torch.Tensor, *,
                 nodes: Nodes = None, **_ignored) -> LossOutput:
        """y, cond (B, N, V); forcings (B, N, F). `net` is called as net(None, None, cond,
        forcings); extra keywords (generator, …) are accepted and ignored."""
        pred = net(None, None, cond, forcings).to(torch.float32)
        per_sample = self.weighted_mean_sq(pred - y.to(torch.float32), nodes)
        return LossOutput(per_sample.mean(), per_sample, None)


def make_loss(cfg: DiffusionConfig, area_weights=None) -> EDMLoss | RegressionLoss:
    """EDMLoss (σ distribution from `cfg.regime`) or RegressionLoss when `cfg.deterministic`;
    variable weights from `cfg.variable_weights`."""
    if cfg.deterministic:
        return RegressionLoss(area_weights, cfg.variable_weights)
    return EDMLoss(make_sigma_sampler(cfg), cfg.sigma_data, area_weights, cfg.variable_weights)
