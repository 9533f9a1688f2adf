"""diffusion.noise=residual_spectrum through training and sampling: the run measures the
training residuals' spectrum, trains on noise coloured by it, saves it in the checkpoint, and
sampling colours its noise from there."""

import json

import numpy as np
import pytest
import torch

from hpcds.checkpoint import LATEST, load_checkpoint
from hpcds.cli.main import main
from hpcds.data.paired import PairedDataset
from hpcds.diffusion.noise_shape import NoiseSpectrum
from hpcds.ensemble.model import load_sampling_model
from hpcds.errors import CheckpointError
from hpcds.grids.spacing import dct_wavenumbers, grid_spacing_km
from hpcds.train.noise_spectrum import MAX_DATES

COLOURED = ["diffusion.noise=residual_spectrum", "training.steps=2"]


def test_run_trains_on_and_saves_the_residual_spectrum(overrides, make_cfg, tmp_path):
    assert main(["train", "tiny", *overrides, *COLOURED, "--quiet"]) == 0
    state = load_checkpoint(tmp_path / "run" / LATEST, resume=False)
    spectrum = NoiseSpectrum.from_dict(state["noise_spectrum"])

    # Parseval against the stores: Σ_b count_b·power_b = the mean over the training dates
    # of Σ_n r_n², r the residual normalised with the run's statistics
    cfg = make_cfg(*COLOURED)
    ds = PairedDataset.from_config(cfg)
    stats = json.loads((tmp_path / "run" / "statistics.json").read_text())
    mean = np.asarray(stats["residual_mean"])[:, None]
    std = np.asarray(stats["residual_std"])[:, None]
    n_train = len(ds) - cfg.training.val_dates
    assert n_train <= MAX_DATES  # every training date is measured
    want = np.mean([(((ds.residual(i) - mean) / std) ** 2).sum(axis=1)
                    for i in range(n_train)], axis=0)
    ny, nx = ds.hr_grid.field_shape
    _, dk, bins = dct_wavenumbers(ny, nx, *grid_spacing_km(ds.hr_grid))
    counts = np.bincount(bins.ravel())
    assert spectrum.dk == pytest.approx(dk, rel=1e-12)
    np.testing.assert_allclose(spectrum.power @ counts, want, rtol=1e-10)
    # the residuals are smoother than white noise: less power per coefficient at the top
    assert (spectrum.power[:, -3:].mean(axis=1) < spectrum.power[:, 1:4].mean(axis=1)).all()

    # sampling colours its noise with the checkpoint's spectrum
    model = load_sampling_model(cfg, ds.hr_grid)
    assert model.noise_shape is not None
    np.testing.assert_array_equal(model.noise_shape.amplitude.shape, (5, ny, nx))
    assert (model.noise_shape.amplitude ** 2).mean(axis=(1, 2)) == pytest.approx(1.0)

    # a checkpoint without it is refused with the fix, not sampled with white noise
    broken = tmp_path / "broken.pt"
    torch.save({**state, "noise_spectrum": None}, broken)
    with pytest.raises(CheckpointError, match="no valid noise spectrum"):
        load_sampling_model(cfg, ds.hr_grid, checkpoint=broken)


def test_white_noise_runs_save_no_spectrum(overrides, make_cfg, tmp_path):
    assert main(["train", "tiny", *overrides, "training.steps=1", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "run" / LATEST, resume=False)["noise_spectrum"] is None
    cfg = make_cfg()
    assert load_sampling_model(cfg, PairedDataset.from_config(cfg).hr_grid).noise_shape is None
