"""Loss on a fixed draw of σ and noise, comparable from one evaluation to the next.

Every date of the evaluated set is seen `draws` times; the σ and noise of each (date, draw)
come from a generator re-seeded with `seed` at every evaluation (dates in order, batches of
the same composition), so two evaluations differ only through the weights. The EDM loss is
the λ(σ)-weighted per-sample loss the model is trained on, reported overall and per bin of
ln σ (SIGMA_BINS, edges -2, 0, 2: below the data scale, around it, above it, far above):

    {"loss": 0.42, "loss_by_sigma": {"ln_sigma<-2": .., "-2<=ln_sigma<0": ..,
                                     "0<=ln_sigma<2": .., "ln_sigma>=2": ..},
     "count_by_sigma": {...}}

A bin that received no draw reports NaN. The regression (deterministic) mode has no σ: its
loss is the weighted MSE, with one draw per date.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hpcds.train.components import autocast
from hpcds.train.data import TrainSamples, collate, to_device

SIGMA_EDGES = (-2.0, 0.0, 2.0)
SIGMA_BINS = ("ln_sigma<-2", "-2<=ln_sigma<0", "0<=ln_sigma<2", "ln_sigma>=2")
DEFAULT_DRAWS = 4
VAL_SEED_OFFSET = 7919  # validation draws never share a stream with training


@torch.no_grad()
def fixed_draw_loss(denoiser, loss_fn, samples: TrainSamples, *, seed: int,
                    draws: int = DEFAULT_DRAWS, batch_size: int = 1,
                    device: torch.device | str = "cpu", noise=None, nodes=None,
                    reduce=None) -> dict:
    """noise: a `TrainDraws` for the unit noise (keyed by the item counter; σ still comes
    from the re-seeded generator); nodes/reduce: a shard's rows of the global loss and the
    sum over the model-parallel group (see hpcds/train/parallel.py)."""
    device = torch.device(device)
    deterministic = getattr(denoiser, "deterministic", False)
    draws = 1 if deterministic else draws
    generator = torch.Generator(device).manual_seed(int(seed))
    was_training = denoiser.training
    denoiser.eval()
    items = [i for i in range(len(samples)) for _ in range(draws)]
    losses, sigmas = [], []
    try:
        for lo in range(0, len(items), batch_size):
            chunk = items[lo:lo + batch_size]
            batch = to_device(collate([samples[i] for i in chunk]), device)
            extra = {} if nodes is None else {"nodes": nodes}
            if noise is not None and not deterministic:
                extra["noise"] = noise.noise(np.arange(lo, lo + len(chunk)))
            with autocast(device):
                out = loss_fn(denoiser, batch["target"], batch["cond"], batch["forcings"],
                              generator=generator, **extra)
            per_sample = out.per_sample.float()
            losses.append(per_sample if reduce is None else reduce(per_sample))
            if out.sigma is not None:
                sigmas.append(out.sigma.float())
    finally:
        denoiser.train(was_training)
    if not losses:
        return {"loss": math.nan}
    per_sample = torch.cat(losses).cpu()
    result = {"loss": per_sample.mean().item()}
    if sigmas:
        result.update(by_sigma(per_sample, torch.cat(sigmas).cpu()))
    return result


def by_sigma(per_sample: torch.Tensor, sigma: torch.Tensor) -> dict:
    """Mean loss and count per ln σ bin."""
    bins = torch.bucketize(sigma.log(), torch.tensor(SIGMA_EDGES), right=True)
    loss, count = {}, {}
    for b, name in enumerate(SIGMA_BINS):
        mask = bins == b
        count[name] = int(mask.sum())
        loss[name] = per_sample[mask].mean().item() if count[name] else math.nan
    return {"loss_by_sigma": loss, "count_by_sigma": count}
