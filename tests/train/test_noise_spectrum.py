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


def _normalised(ds, stats: dict, key: str, values: np.ndarray) -> np.ndarray:
    """(V, N) → (N, V) normalised with the run's statistics.json `key`_mean/_std."""
    mean, std = (np.asarray(stats[f"{key}_{m}"])[:, None] for m in ("mean", "std"))
    return ((values - mean) / std).T


@pytest.mark.parametrize("detrend", [False, True])
def test_run_trains_on_and_saves_the_residual_spectrum(overrides, make_cfg, tmp_path, detrend):
    coloured = [*COLOURED, f"diffusion.noise_detrend={str(detrend).lower()}"]
    assert main(["train", "tiny", *overrides, *coloured, "--quiet"]) == 0
    state = load_checkpoint(tmp_path / "run" / LATEST, resume=False)
    spectrum = NoiseSpectrum.from_dict(state["noise_spectrum"])

    # Parseval against the stores: Σ_b count_b·power_b = the mean over the training dates
    # of Σ_n r_n², r the residual normalised with the run's statistics — or, detrended, r
    # minus its least-squares fit per node by [1, normalised inputs] (np.linalg.lstsq)
    cfg = make_cfg(*coloured)
    ds = PairedDataset.from_config(cfg)
    stats = json.loads((tmp_path / "run" / "statistics.json").read_text())
    n_train = len(ds) - cfg.training.val_dates
    assert n_train <= MAX_DATES  # every training date is measured
    r = np.stack([_normalised(ds, stats, "residual", ds.residual(i)) for i in range(n_train)])
    if detrend:
        x = np.stack([_normalised(ds, stats, "input", ds.interpolate(ds.read_lr(i)))
                      for i in range(n_train)])
        for n in range(r.shape[1]):
            X = np.column_stack([np.ones(n_train), x[:, n]])
            r[:, n] -= X @ np.linalg.lstsq(X, r[:, n], rcond=None)[0]
    want = (r ** 2).sum(axis=1).mean(axis=0)
    ny, nx = ds.hr_grid.field_shape
    _, dk, bins = dct_wavenumbers(ny, nx, *grid_spacing_km(ds.hr_grid))
    counts = np.bincount(bins.ravel())
    assert spectrum.dk == pytest.approx(dk, rel=1e-12)
    np.testing.assert_allclose(spectrum.power @ counts, want, rtol=1e-8)
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


def test_detrend_removes_exactly_the_part_linear_in_the_inputs():
    """residual = a_n + Σ_v' b_nv'·input_v' + e: detrend leaves e minus its own per-node
    least-squares fit (a float64 np.linalg.lstsq per node and variable as the reference)."""
    from hpcds.train.noise_spectrum import detrend

    rng = np.random.default_rng(3)
    D, N, V = 40, 7, 3
    inputs = rng.standard_normal((D, N, V))
    a, b = rng.standard_normal((N, V)), rng.standard_normal((N, V, V))
    e = 0.1 * rng.standard_normal((D, N, V))
    residuals = a + np.einsum("dnw,nwv->dnv", inputs, b) + e
    got = detrend(residuals, inputs)
    for n in range(N):
        X = np.column_stack([np.ones(D), inputs[:, n]])
        for v in range(V):
            beta = np.linalg.lstsq(X, e[:, n, v], rcond=None)[0]
            np.testing.assert_allclose(got[:, n, v], e[:, n, v] - X @ beta, atol=1e-9)
