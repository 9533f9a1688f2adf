"""The coloured noise a run trains with (diffusion.noise=residual_spectrum): the training
residuals' radial DCT spectrum, measured once at the start of training, and the `NoiseShape`
built from it (hpcds/diffusion/noise_shape.py). The spectrum goes into every checkpoint
(`noise_spectrum`), so sampling colours its noise exactly as training did.

Measured on whole fields (every rank reads the same dates' full residuals and gets the same
numbers, so P ranks equal one process), normalised as the targets are, over up to
`MAX_DATES` training dates spread evenly over the training period.
"""

from __future__ import annotations

import numpy as np

from hpcds.config.schema import HpcdsConfig, NoiseKind
from hpcds.data.paired import Normalisation, PairedDataset
from hpcds.diffusion.noise_shape import NoiseShape, NoiseSpectrum, radial_power
from hpcds.train.data import Split, subset

MAX_DATES = 64  # the spectrum's shape, not one date's: ±18 % per bin and date at 64


def measure_noise_spectrum(cfg: HpcdsConfig, split: Split, norm: Normalisation) -> NoiseSpectrum:
    """The normalised training residuals' mean DCT power per radial bin (whole grid)."""
    train = split.train
    if train.hr_cells != (0, train.hr_grid.size):  # a shard: the same dates on every cell
        train = subset(PairedDataset.from_config(cfg), train.dates)
    n = len(train)
    dates = np.unique(np.linspace(0, n - 1, min(MAX_DATES, n)).round().astype(np.int64))
    mean, std = norm.residual_mean[:, None], norm.residual_std[:, None]
    values = np.stack([((train.residual(int(i)) - mean) / std).T for i in dates])  # (D, N, V)
    return radial_power(values, train.hr_grid)


def training_noise(cfg: HpcdsConfig, split: Split, norm: Normalisation
                   ) -> tuple[NoiseShape | None, NoiseSpectrum | None]:
    """(shape, spectrum) for diffusion.noise=residual_spectrum; (None, None) for white noise
    and for the deterministic regression (which draws no noise)."""
    d = cfg.diffusion
    if d.noise is NoiseKind.white or d.deterministic:
        return None, None
    spectrum = measure_noise_spectrum(cfg, split, norm)
    return NoiseShape(split.train.hr_grid, spectrum, d.noise_exponent, d.noise_floor), spectrum
