"""The model pieces a run trains, built from the config (the denoiser as sampling builds it:
`hpcds.checkpoint.build_denoiser`).

    net        DownscalerNet F_θ (what checkpoints hold as `model`, and its EMA as `ema`),
               compiled in place when model.compile
    denoiser   EDMPrecond(net): D(x; σ, cond, forcings), or the regression of the conditional
               mean when diffusion.deterministic
    loss       EDMLoss (σ from diffusion.regime) or RegressionLoss, weighted by the HR cells'
               area weights and diffusion.variable_weights

Model initialisation draws from torch's global generator: seed it first (`rng.seed_all`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hpcds.checkpoint import build_denoiser
from hpcds.config.schema import HpcdsConfig
from hpcds.diffusion.loss import make_loss
from hpcds.diffusion.precond import EDMPrecond
from hpcds.errors import ConfigError
from hpcds.grids import Grid
from hpcds.models import DownscalerNet
from hpcds.models.shard_graphs import GraphParts


@dataclass
class Components:
    net: DownscalerNet
    denoiser: EDMPrecond
    loss: object  # EDMLoss | RegressionLoss: loss(denoiser, y, cond, forcings, generator=…)


def build_components(cfg: HpcdsConfig, hr_grid: Grid, n_vars: int, n_forcings: int,
                     device: torch.device | str = "cpu",
                     parts: GraphParts | None = None) -> Components:
    """parts: build only one model-parallel rank's graphs (then shard the net with
    parallelize_model on the same ranges); None: the full graphs."""
    weights = cfg.diffusion.variable_weights
    if weights is not None and len(weights) != n_vars:
        raise ConfigError(f"bad value {list(weights)} for config key 'diffusion.variable_weights':"
                          f" expected {n_vars} weights, one per data.variables entry, or null")
    # model.compile: lazily, so sharding the net later is fine
    denoiser = build_denoiser(cfg, hr_grid, n_vars, n_forcings,
                              cache_dir=Path(cfg.grid.cache_dir), parts=parts, device=device)
    net = denoiser.backbone
    loss = make_loss(cfg.diffusion, area_weights=hr_grid.area_weights)
    return Components(net=net, denoiser=denoiser, loss=loss)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; float32 (a no-op context) elsewhere."""
    enabled = device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def pick_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
