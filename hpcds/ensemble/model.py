"""The sampling model: a trained checkpoint turned into an `EDMPrecond` denoiser plus the
normalisation it was trained with.

    model = load_sampling_model(cfg, hr_grid)          # sampling.checkpoint or run_dir/latest.pt
    model.precond.as_denoiser(cond, forcings)          # the samplers' D(x; σ)

What comes from where:
  checkpoint  the CLI's `--checkpoint`, else `sampling.checkpoint`, else the training run's
              `training.run_dir/latest.pt`.
  weights     the EMA weights (`ema.module`) when `sampling.use_ema` and the checkpoint has
              them, else the raw weights (`model`); which one is recorded in the provenance.
  network     the checkpoint's own config decides the architecture (`model`, `data.variables`,
              `diffusion.sigma_data`, `diffusion.deterministic`): sampling with another
              preset's model section cannot silently build a different network. Only
              `model.backend` (the kernels) and `model.compile` are taken from the sampling
              config. The σ schedule (`diffusion.sigma_min/sigma_max/rho`) is a sampling
              choice and comes from the sampling config.
  statistics  the checkpoint's `normalisation`, else `statistics.json` beside it (the run
              directory's record, `hpcds.checkpoint.STATS_NAME`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from hpcds.checkpoint import (LATEST, STATS_NAME, build_denoiser, check_compatible,
                              config_from_yaml, load_checkpoint)
from hpcds.config.load import to_yaml
from hpcds.config.schema import HpcdsConfig
from hpcds.data.forcings import FORCING_NAMES
from hpcds.data.paired import Normalisation
from hpcds.diffusion.noise_shape import NoiseShape, NoiseSpectrum, is_coloured
from hpcds.diffusion.precond import EDMPrecond
from hpcds.errors import CheckpointError
from hpcds.grids.geometry import Grid
from hpcds.models.shard_graphs import GraphParts

log = logging.getLogger(__name__)

_NORM_KEYS = ("input_mean", "input_std", "residual_mean", "residual_std")


@dataclass
class SamplingModel:
    precond: EDMPrecond  # in eval mode, on `device`
    normalisation: Normalisation
    train_config: HpcdsConfig  # the config the checkpoint was trained with
    checkpoint: Path
    sha256: str
    step: int
    weights: str  # "ema" or "model"
    device: torch.device
    noise_shape: NoiseShape | None = None  # the coloured noise it was trained with; None: white

    @property
    def deterministic(self) -> bool:
        return self.precond.deterministic


def default_checkpoint(cfg: HpcdsConfig, explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` (the CLI's --checkpoint), else sampling.checkpoint, else the training
    run's latest.pt."""
    if explicit:
        return Path(explicit)
    if cfg.sampling.checkpoint:
        return Path(cfg.sampling.checkpoint)
    return Path(cfg.training.run_dir) / LATEST


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _normalisation(state: dict, path: Path, variables: list[str]) -> Normalisation:
    payload = state.get("normalisation")
    source = f"checkpoint {path}"
    if not isinstance(payload, dict) or not all(k in payload for k in _NORM_KEYS):
        stats = path.parent / STATS_NAME
        if not stats.is_file():
            raise CheckpointError(
                f"checkpoint {path} holds no normalisation and there is no {STATS_NAME} "
                f"beside it: sample from a checkpoint of a training run (its run_dir)")
        try:
            payload = json.loads(stats.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{stats} cannot be read ({e}): restore it from the "
                                  "training run") from None
        source = str(stats)

    def array(key):
        value = payload[key]
        if isinstance(value, torch.Tensor):
            value = value.cpu().numpy()
        return np.asarray(value, dtype=np.float64).reshape(-1)

    try:
        norm = Normalisation(variables=tuple(payload.get("variables") or variables),
                             log_offset=array("log_offset") if "log_offset" in payload else None,
                             **{k: array(k) for k in _NORM_KEYS})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the normalisation in {source} is malformed ({e})") from None
    if list(norm.variables) != list(variables) or any(
            getattr(norm, k).shape != (len(variables),) for k in (*_NORM_KEYS, "log_offset")):
        raise CheckpointError(f"the normalisation in {source} is for variables "
                              f"{list(norm.variables)}, the model for {variables}")
    return norm


def load_sampling_model(cfg: HpcdsConfig, hr_grid: Grid,
                        checkpoint: str | os.PathLike | None = None,
                        device: str | torch.device | None = None,
                        parts: GraphParts | None = None) -> SamplingModel:
    """Build the network the checkpoint was trained as, load its (EMA) weights, wrap it in
    `EDMPrecond`; check its variables against `cfg.data.variables`. parts: build only one
    model-parallel rank's graphs (shard the network on the same ranges before use)."""
    path = default_checkpoint(cfg, checkpoint)
    if not path.is_file():
        hint = ("train one with `hpcds train`, or set sampling.checkpoint / --checkpoint"
                if checkpoint is None and not cfg.sampling.checkpoint else "check the path")
        raise CheckpointError(f"no checkpoint at {path}: {hint}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = load_checkpoint(path, resume=False)
    config_yaml = state["config"]
    if not isinstance(config_yaml, str):  # tolerate a config saved as a plain dict
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(config_yaml))
    train_cfg = config_from_yaml(config_yaml, path)
    variables = list(train_cfg.data.variables)
    if variables != list(cfg.data.variables):
        raise CheckpointError(
            f"checkpoint {path} was trained on variables {variables}, this config has "
            f"{list(cfg.data.variables)}: set data.variables=[{','.join(variables)}]")

    train_cfg.model.backend = cfg.model.backend  # kernels are an execution choice
    train_cfg.model.compile = cfg.model.compile  # and so is compiling
    precond = build_denoiser(train_cfg, hr_grid, len(variables), len(FORCING_NAMES),
                             cache_dir=cfg.grid.cache_dir, parts=parts, device=device)
    net = precond.backbone

    weights, which = state["model"], "model"
    ema = state.get("ema")
    if cfg.sampling.use_ema:
        if isinstance(ema, dict) and isinstance(ema.get("module"), dict):
            weights, which = ema["module"], "ema"
        else:
            log.warning("checkpoint %s has no EMA weights; sampling with the raw weights", path)
    check_compatible(net, weights, config_yaml, to_yaml(train_cfg), path)
    net.load_state_dict(weights, strict=True)
    precond.eval().requires_grad_(False).to(device)
    return SamplingModel(precond=precond, normalisation=_normalisation(state, path, variables),
                         train_config=train_cfg, checkpoint=path, sha256=file_sha256(path),
                         step=int(state["step"]), weights=which, device=device,
                         noise_shape=_noise_shape(state, path, train_cfg, hr_grid))


def _noise_shape(state: dict, path: Path, train_cfg: HpcdsConfig, hr_grid: Grid
                 ) -> NoiseShape | None:
    """The coloured noise of diffusion.noise=residual_spectrum, from the checkpoint's
    `noise_spectrum`; None for white noise (and the deterministic regression)."""
    d = train_cfg.diffusion
    if not is_coloured(d):
        return None
    payload = state.get("noise_spectrum")
    try:
        spectrum = NoiseSpectrum.from_dict(payload)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} was trained with diffusion.noise=residual_spectrum but holds "
            f"no valid noise spectrum ({e or 'missing'}): use a checkpoint its training run "
            "wrote") from None
    return NoiseShape(hr_grid, spectrum, d.noise_exponent, d.noise_floor)
