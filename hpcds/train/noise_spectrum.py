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

from hpcds.config.schema import HpcdsConfig
from hpcds.data.paired import Normalisation, PairedDataset
from hpcds.diffusion.noise_shape import NoiseShape, NoiseSpectrum, is_coloured, radial_power
from hpcds.train.data import Split, subset

MAX_DATES = 64  # the spectrum's shape, not one date's: ±18 % per bin and date at 64


def _samples(train: PairedDataset, dates: np.ndarray, norm: Normalisation
             ) -> tuple[np.ndarray, np.ndarray]:
    """(residuals, inputs), each (D, N, V) float64, normalised as the targets and inputs are."""
    res, inp = [], []
    for i in dates:
        cond, residual = norm.apply(*train.pair(int(i)))  # (V, N) each
        res.append(residual.T)
        inp.append(cond.T)
    return np.stack(res), np.stack(inp)


def detrend(residuals: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """residuals (D, N, V) minus their least-squares fit, per node and variable over the D
    dates, by an intercept and the node's inputs (D, N, V'): the part of the residual a
    per-node linear model of the LR input cannot explain (→ (D, N, V))."""
    X = np.concatenate([np.ones(inputs.shape[:2] + (1,)), inputs], axis=2)  # (D, N, F)
    Xn = np.moveaxis(X, 1, 0)  # (N, D, F)
    xtx = Xn.transpose(0, 2, 1) @ Xn  # (N, F, F)
    xty = Xn.transpose(0, 2, 1) @ np.moveaxis(residuals, 1, 0)  # (N, F, V)
    beta = np.linalg.solve(xtx + 1e-9 * np.eye(X.shape[2]), xty)  # (N, F, V)
    return residuals - np.moveaxis(Xn @ beta, 0, 1)


def measure_noise_spectrum(cfg: HpcdsConfig, split: Split, norm: Normalisation) -> NoiseSpectrum:
    """The normalised training residuals' mean DCT power per radial bin (whole grid); with
    diffusion.noise_detrend, of their part not linear in the LR input (`detrend`)."""
    train = split.train
    if train.hr_cells != (0, train.hr_grid.size):  # a shard: the same dates on every cell
        train = subset(PairedDataset.from_config(cfg), train.dates)
    n = len(train)
    dates = np.unique(np.linspace(0, n - 1, min(MAX_DATES, n)).round().astype(np.int64))
    values, inputs = _samples(train, dates, norm)
    if cfg.diffusion.noise_detrend:
        values = detrend(values, inputs)
    return radial_power(values, train.hr_grid)


def training_noise(cfg: HpcdsConfig, split: Split, norm: Normalisation
                   ) -> tuple[NoiseShape | None, NoiseSpectrum | None]:
    """(shape, spectrum) for diffusion.noise=residual_spectrum; (None, None) for white noise
    and for the deterministic regression (which draws no noise)."""
    d = cfg.diffusion
    if not is_coloured(d):
        return None, None
    spectrum = measure_noise_spectrum(cfg, split, norm)
    return NoiseShape(split.train.hr_grid, spectrum, d.noise_exponent, d.noise_floor), spectrum
