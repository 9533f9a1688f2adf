"""The denoiser a config describes: `DownscalerNet` F_θ on the HR grid's graphs, wrapped in
`EDMPrecond`. Training builds it from its own config; sampling from the config saved in the
checkpoint, so both get the same network and the checkpoint's weights fit it.

Model initialisation draws from torch's global generator: seed it first (`hpcds.train.rng`).
"""

from __future__ import annotations

import os

from hpcds.config.schema import HpcdsConfig
from hpcds.diffusion.precond import EDMPrecond
from hpcds.grids.geometry import Grid
from hpcds.models import DownscalerNet
from hpcds.models.compile import compile_network
from hpcds.models.shard_graphs import GraphParts, model_graphs


def build_denoiser(cfg: HpcdsConfig, hr_grid: Grid, n_vars: int, n_forcings: int, *,
                   cache_dir: str | os.PathLike | None = None,
                   parts: GraphParts | None = None, device=None) -> EDMPrecond:
    """EDMPrecond(DownscalerNet(cfg.model)) with cfg.diffusion's sigma_data and deterministic;
    the network is its `.backbone` (what checkpoints hold as `model`). cache_dir: where built
    graphs are kept (None: built each time). parts: build only one model-parallel rank's
    graphs (then shard the network with parallelize_model on the same ranges); None: the
    full graphs. device: where the network goes before `model.compile` compiles it (lazily,
    in place: sharding and loading weights afterwards are fine; hpcds/models/compile.py)."""
    graphs = model_graphs(cfg.model, hr_grid, cache_dir=cache_dir, parts=parts)
    net = compile_network(DownscalerNet(cfg.model, n_vars, n_forcings, graphs).to(device),
                          cfg.model)
    return EDMPrecond(net, cfg.diffusion.sigma_data, deterministic=cfg.diffusion.deterministic)
